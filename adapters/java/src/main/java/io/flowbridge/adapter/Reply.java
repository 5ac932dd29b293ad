package io.flowbridge.adapter;

import java.util.Objects;

/**
 * A success with a message and detail besides its data (the engine's {@code info} and
 * {@code detail}). A handler that only has data returns the data itself.
 *
 * @param data any JSON-like value: a Map, List, String, Number, Boolean, byte[], a record,
 *     {@link Json#NULL} for JSON null, or null for an empty map (as the vendor's Go SDK does)
 */
public record Reply(Object data, String message, String detail) {
    public Reply {
        Objects.requireNonNull(message, "message");
        Objects.requireNonNull(detail, "detail");
    }

    /** A result of this data with an empty message and detail. */
    public static Reply of(Object data) {
        return new Reply(data, "", "");
    }

    public Reply withMessage(String message) {
        return new Reply(data, message, detail);
    }

    public Reply withDetail(String detail) {
        return new Reply(data, message, detail);
    }
}
