package io.flowbridge.adapter;

/**
 * Throw to fail a request with a chosen message (the engine's {@code info}) and detail.
 * Any other exception fails it too, with its message and its stack trace as detail.
 */
public class HandlerException extends Exception {
    private static final long serialVersionUID = 1L;

    private final String detail;
    private transient Object data;

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

    /**
     * Attaches a value to the failure (anything a result may hold): for a debug request
     * the bridge shows it as the response's value. Returns this exception.
     */
    public HandlerException withData(Object data) {
        this.data = data;
        return this;
    }

    /** The value attached with {@link #withData}, or null. */
    public Object data() {
        return data;
    }
}
