package io.flowbridge.adapter.protocol;

import java.util.Arrays;

/**
 * A msgpack ext value as decoded. The bridge refuses ext values in result data (SPEC.md
 * section 5); it exists so that a decoded value can still be looked at.
 */
public record Ext(byte type, byte[] data) {
    @Override
    public boolean equals(Object o) {
        return o instanceof Ext e && e.type == type && Arrays.equals(e.data, data);
    }

    @Override
    public int hashCode() {
        return 31 * type + Arrays.hashCode(data);
    }

    @Override
    public String toString() {
        return "Ext[type=" + type + ", " + data.length + " bytes]";
    }
}
