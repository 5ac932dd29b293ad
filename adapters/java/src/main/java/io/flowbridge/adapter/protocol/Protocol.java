package io.flowbridge.adapter.protocol;

/** The numbers of the stdio protocol, each named once with its reason. */
public final class Protocol {
    private Protocol() {}

    /** The protocol version this adapter speaks (SPEC.md is version 1). */
    public static final int VERSION = 1;

    /** The frame limit used before hello announces one: 16 MiB (SPEC.md section 1). */
    public static final int DEFAULT_MAX_FRAME = 16 * 1024 * 1024;

    /** The smallest limit hello may announce: room for any control frame. */
    public static final int MIN_MAX_FRAME = 1024;

    /** The largest limit hello may announce: 1 GiB keeps a frame inside one Java array. */
    public static final int MAX_MAX_FRAME = 1024 * 1024 * 1024;

    /** Ids stop at 2^53-1 so that they are exact in a JavaScript number. */
    public static final long MAX_ID = (1L << 53) - 1;

    /** The most requests a child may declare it takes at once. */
    public static final int MAX_CONCURRENCY = 65536;

    /** Bytes of the big-endian length that opens every frame. */
    public static final int HEADER_BYTES = 4;
}
