package io.flowbridge.adapter.protocol;

/**
 * A value that msgpack cannot carry (an unknown class, a cycle). {@link #path()} names
 * where it sits in the encoded value, as SPEC.md section 5 writes JSON paths ({@code $.a[3]}).
 */
public final class UnencodableValueException extends IllegalArgumentException {
    private static final long serialVersionUID = 1L;

    private final String reason;
    private String path = "";

    public UnencodableValueException(String reason) {
        super(reason);
        this.reason = reason;
    }

    /** Called while the encoder unwinds, innermost segment first. */
    UnencodableValueException within(String segment) {
        path = segment + path;
        return this;
    }

    /** Where the value sits, such as {@code $.readings[3]}. */
    public String path() {
        return "$" + path;
    }

    public String reason() {
        return reason;
    }

    @Override
    public String getMessage() {
        return reason + " at " + path();
    }
}
