package io.flowbridge.adapter.protocol;

/** The levels a log frame may carry (SPEC.md section 3, log). */
public enum LogLevel {
    DEBUG("debug"),
    INFO("info"),
    WARNING("warning"),
    ERROR("error");

    private final String wireName;

    LogLevel(String wireName) {
        this.wireName = wireName;
    }

    public String wireName() {
        return wireName;
    }

    /** The level named {@code name} on the wire, or null for a name that is not one. */
    public static LogLevel fromWire(String name) {
        for (LogLevel l : values()) {
            if (l.wireName.equals(name)) {
                return l;
            }
        }
        return null;
    }
}
