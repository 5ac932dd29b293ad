package io.flowbridge.adapter;

import java.util.Objects;

/**
 * A success with a message and detail besides its data (the engine's {@code info} and
 * {@code detail}). A handler that only has data returns the data itself.
 *
 * @param data any JSON-like value: a Map, List, String, Number, Boolean, byte[], a record,
 *     {@link Json#NULL} for JSON null, or null for an empty map (as the vendor's Go SDK does)
 */
public record Result(Object data, String message, String detail) {
    public Result {
        Objects.requireNonNull(message, "message");
        Objects.requireNonNull(detail, "detail");
    }

    /** A result of this data with an empty message and detail. */
    public static Result of(Object data) {
        return new Result(data, "", "");
    }

    public Result withMessage(String message) {
        return new Result(data, message, detail);
    }

    public Result withDetail(String detail) {
        return new Result(data, message, detail);
    }
}
