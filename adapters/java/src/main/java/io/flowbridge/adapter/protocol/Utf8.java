package io.flowbridge.adapter.protocol;

import java.nio.charset.StandardCharsets;

/**
 * Strict UTF-8 for msgpack str values: checked without allocating, and decoded with the
 * JDK's fast path. msgpack-core's own string decoding allocates a large buffer per
 * unpacker, which on small frames costs more than the frame.
 */
final class Utf8 {
    private Utf8() {}

    /** Whether {@code b[off, off+len)} is well-formed UTF-8 (no overlongs, no surrogates). */
    static boolean isValid(byte[] b, int off, int len) {
        int i = off;
        int end = off + len;
        while (i < end) {
            int c = b[i] & 0xff;
            if (c < 0x80) {
                i++;
                continue;
            }
            int need;
            int min;
            if (c >= 0xc2 && c <= 0xdf) {
                need = 1;
                min = 0x80;
            } else if (c >= 0xe0 && c <= 0xef) {
                need = 2;
                min = 0x800;
            } else if (c >= 0xf0 && c <= 0xf4) {
                need = 3;
                min = 0x10000;
            } else {
                return false;
            }
            if (i + need >= end) {
                return false; // the sequence runs past the end
            }
            int cp = c & (0x3f >> need);
            for (int k = 1; k <= need; k++) {
                int x = b[i + k] & 0xff;
                if ((x & 0xc0) != 0x80) {
                    return false;
                }
                cp = (cp << 6) | (x & 0x3f);
            }
            if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) {
                return false;
            }
            i += need + 1;
        }
        return true;
    }

    static String decode(byte[] b) {
        return new String(b, StandardCharsets.UTF_8);
    }
}
