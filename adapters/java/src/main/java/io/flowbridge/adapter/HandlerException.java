package io.flowbridge.adapter;

/**
 * Throw to fail a request with a chosen message (the engine's {@code info}) and detail.
 * Any other exception fails it too, with its message and its stack trace as detail.
 */
public class HandlerException extends Exception {
    private static final long serialVersionUID = 1L;

    private final String detail;

    public HandlerException(String message) {
        this(message, "", null);
    }

    public HandlerException(String message, String detail) {
        this(message, detail, null);
    }

    public HandlerException(String message, String detail, Throwable cause) {
        super(message == null ? "" : message, cause);
        this.detail = detail == null ? "" : detail;
    }

    /** More text for a person, such as what was tried; the engine's {@code detail}. */
    public String detail() {
        return detail;
    }
}
