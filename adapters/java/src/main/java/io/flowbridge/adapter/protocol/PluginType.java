package io.flowbridge.adapter.protocol;

/** How the plugin is registered with the engine (hello.plugin_type). */
public enum PluginType {
    SERVICE("service"),
    USER("user");

    private final String wireName;

    PluginType(String wireName) {
        this.wireName = wireName;
    }

    public String wireName() {
        return wireName;
    }

    /** The type named {@code name} on the wire, or null for a name that is not one. */
    public static PluginType fromWire(String name) {
        for (PluginType t : values()) {
            if (t.wireName.equals(name)) {
                return t;
            }
        }
        return null;
    }
}
