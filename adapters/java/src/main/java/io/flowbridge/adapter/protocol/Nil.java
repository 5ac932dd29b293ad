package io.flowbridge.adapter.protocol;

/**
 * msgpack nil (JSON null) where Java's null cannot stand or means something else:
 * inside {@code Map.of} and {@code List.of}, and as result data, where null means an
 * empty map. Users reach it as {@code Json.NULL}.
 */
public enum Nil {
    VALUE
}
