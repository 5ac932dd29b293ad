package io.flowbridge.adapter.protocol;

import java.io.IOException;
import java.lang.reflect.Array;
import java.lang.reflect.InvocationTargetException;
import java.lang.reflect.Method;
import java.lang.reflect.RecordComponent;
import java.math.BigDecimal;
import java.math.BigInteger;
import java.net.URI;
import java.net.URL;
import java.nio.ByteBuffer;
import java.time.temporal.TemporalAccessor;
import java.util.ArrayList;
import java.util.Collection;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Optional;
import java.util.UUID;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.concurrent.atomic.AtomicLong;
import org.msgpack.core.MessageFormat;
import org.msgpack.core.MessagePacker;
import org.msgpack.core.MessageUnpacker;

/**
 * Plain Java values to msgpack and back. Decoded values are {@code null}, Boolean, Long
 * (BigInteger above Long.MAX_VALUE), Double, String, byte[], List, Map (insertion
 * ordered) and {@link Ext}. Encoding takes those and the usual Java shapes: any Number,
 * CharSequence, enum, Map, Collection, array, record (a map of its components),
 * Optional, ByteBuffer, and java.time / UUID / URI values as their text.
 */
public final class Values {
    private Values() {}

    /**
     * How deep the encoder follows nested values. The bridge refuses data nested deeper
     * than 100 (SPEC.md section 5) and says where; this limit only stops a cycle, such as
     * a list that holds itself, before it overflows the stack.
     */
    public static final int MAX_ENCODE_DEPTH = 512;

    /** How deep the decoder follows nested values before it calls the input malformed. */
    public static final int MAX_DECODE_DEPTH = 1000;

    // -- encoding ---------------------------------------------------------------------------

    /** Writes {@code value}; an {@link UnencodableValueException} names what and where. */
    public static void pack(MessagePacker p, Object value) throws IOException {
        pack(p, value, 0);
    }

    private static void pack(MessagePacker p, Object v, int depth) throws IOException {
        if (depth > MAX_ENCODE_DEPTH) {
            throw new UnencodableValueException("the value is nested deeper than " + MAX_ENCODE_DEPTH
                    + " levels (does it contain itself?)");
        }
        if (v == null || v == Nil.VALUE) {
            p.packNil();
        } else if (v instanceof String s) {
            p.packString(s);
        } else if (v instanceof Boolean b) {
            p.packBoolean(b);
        } else if (v instanceof Long || v instanceof Integer || v instanceof Short || v instanceof Byte
                || v instanceof AtomicInteger || v instanceof AtomicLong) {
            p.packLong(((Number) v).longValue());
        } else if (v instanceof Double || v instanceof Float) {
            p.packDouble(((Number) v).doubleValue()); // SPEC 1: floats are always float 64
        } else if (v instanceof BigInteger b) {
            if (b.bitLength() <= 63 || (b.signum() > 0 && b.bitLength() <= 64)) {
                p.packBigInteger(b);
            } else {
                throw new UnencodableValueException("the integer " + b + " does not fit in 64 bits");
            }
        } else if (v instanceof BigDecimal d) {
            packDecimal(p, d);
        } else if (v instanceof Number n) {
            p.packDouble(n.doubleValue());
        } else if (v instanceof byte[] b) {
            p.packBinaryHeader(b.length);
            p.writePayload(b);
        } else if (v instanceof ByteBuffer buf) {
            ByteBuffer b = buf.duplicate();
            p.packBinaryHeader(b.remaining());
            byte[] copy = new byte[b.remaining()];
            b.get(copy);
            p.writePayload(copy);
        } else if (v instanceof CharSequence || v instanceof Character || v instanceof UUID
                || v instanceof URI || v instanceof URL || v instanceof TemporalAccessor) {
            p.packString(v.toString());
        } else if (v instanceof Enum<?> e) {
            p.packString(e.name());
        } else if (v instanceof Map<?, ?> m) {
            packMap(p, m, depth);
        } else if (v instanceof Collection<?> c) {
            packIterable(p, c, c.size(), depth);
        } else if (v instanceof Iterable<?> it) {
            List<Object> list = new ArrayList<>();
            it.forEach(list::add);
            packIterable(p, list, list.size(), depth);
        } else if (v instanceof Optional<?> o) {
            pack(p, o.orElse(null), depth + 1);
        } else if (v instanceof Ext e) {
            p.packExtensionTypeHeader(e.type(), e.data().length);
            p.writePayload(e.data());
        } else if (v.getClass().isArray()) {
            packArray(p, v, depth);
        } else if (v.getClass().isRecord()) {
            packRecord(p, v, depth);
        } else {
            throw new UnencodableValueException("cannot encode a " + v.getClass().getName()
                    + "; use Map, List, String, Number, Boolean, byte[], a record or null");
        }
    }

    private static void packDecimal(MessagePacker p, BigDecimal d) throws IOException {
        // A whole number keeps its exact digits as an int when it fits; others become float 64.
        if (d.signum() == 0 || (d.stripTrailingZeros().scale() <= 0 && d.precision() - d.scale() <= 19)) {
            BigInteger b = d.toBigIntegerExact();
            if (b.bitLength() <= 63) {
                p.packLong(b.longValue());
                return;
            }
        }
        p.packDouble(d.doubleValue());
    }

    private static void packMap(MessagePacker p, Map<?, ?> m, int depth) throws IOException {
        // A concurrently changed map could report a size other than what it yields: count first.
        List<Map.Entry<?, ?>> entries = new ArrayList<>(m.entrySet());
        p.packMapHeader(entries.size());
        for (Map.Entry<?, ?> e : entries) {
            Object key = e.getKey();
            if (key == null) {
                throw new UnencodableValueException("a map has a null key");
            }
            try {
                pack(p, key, depth + 1);
            } catch (UnencodableValueException x) {
                throw x.within("{key " + key + "}");
            }
            try {
                pack(p, e.getValue(), depth + 1);
            } catch (UnencodableValueException x) {
                throw x.within(segment(key));
            }
        }
    }

    private static String segment(Object key) {
        String k = String.valueOf(key);
        return k.matches("[A-Za-z_][A-Za-z0-9_]*") ? "." + k : "[" + quote(k) + "]";
    }

    private static String quote(String s) {
        return '"' + s.replace("\\", "\\\\").replace("\"", "\\\"") + '"';
    }

    private static void packIterable(MessagePacker p, Iterable<?> items, int size, int depth) throws IOException {
        List<Object> list = new ArrayList<>(size);
        items.forEach(list::add);
        p.packArrayHeader(list.size());
        for (int i = 0; i < list.size(); i++) {
            try {
                pack(p, list.get(i), depth + 1);
            } catch (UnencodableValueException x) {
                throw x.within("[" + i + "]");
            }
        }
    }

    private static void packArray(MessagePacker p, Object array, int depth) throws IOException {
        if (array instanceof char[] chars) {
            p.packString(new String(chars));
            return;
        }
        int n = Array.getLength(array);
        p.packArrayHeader(n);
        for (int i = 0; i < n; i++) {
            try {
                pack(p, Array.get(array, i), depth + 1);
            } catch (UnencodableValueException x) {
                throw x.within("[" + i + "]");
            }
        }
    }

    private static void packRecord(MessagePacker p, Object rec, int depth) throws IOException {
        RecordComponent[] components = rec.getClass().getRecordComponents();
        p.packMapHeader(components.length);
        for (RecordComponent c : components) {
            p.packString(c.getName());
            Object value;
            try {
                Method accessor = c.getAccessor();
                accessor.setAccessible(true); // records nested in a handler's class are often private
                value = accessor.invoke(rec);
            } catch (IllegalAccessException | InvocationTargetException | RuntimeException e) {
                throw new UnencodableValueException("cannot read record component " + c.getName() + ": " + e)
                        .within("." + c.getName());
            }
            try {
                pack(p, value, depth + 1);
            } catch (UnencodableValueException x) {
                throw x.within("." + c.getName());
            }
        }
    }

    // -- decoding ---------------------------------------------------------------------------

    /** A str, decoded by the JDK; the frame decoder has checked its UTF-8 already. */
    static String unpackStr(MessageUnpacker u) throws IOException {
        int n = u.unpackRawStringHeader();
        return Utf8.decode(u.readPayload(n));
    }

    /**
     * Reads one value. The input must have been checked by the frame decoder (valid
     * msgpack, valid UTF-8); deeper nesting than {@link #MAX_DECODE_DEPTH} is refused.
     */
    public static Object unpack(MessageUnpacker u) throws IOException {
        return unpack(u, 0);
    }

    private static Object unpack(MessageUnpacker u, int depth) throws IOException {
        if (depth > MAX_DECODE_DEPTH) {
            throw new IOException("value nested deeper than " + MAX_DECODE_DEPTH + " levels");
        }
        MessageFormat f = u.getNextFormat();
        switch (f.getValueType()) {
            case NIL:
                u.unpackNil();
                return null;
            case BOOLEAN:
                return u.unpackBoolean();
            case INTEGER:
                if (f == MessageFormat.UINT64) {
                    BigInteger b = u.unpackBigInteger();
                    return b.bitLength() <= 63 ? (Object) b.longValue() : b;
                }
                return u.unpackLong();
            case FLOAT:
                return u.unpackDouble();
            case STRING:
                return unpackStr(u);
            case BINARY: {
                int n = u.unpackBinaryHeader();
                return u.readPayload(n);
            }
            case ARRAY: {
                int n = u.unpackArrayHeader();
                List<Object> list = new ArrayList<>(Math.min(n, 1024));
                for (int i = 0; i < n; i++) {
                    list.add(unpack(u, depth + 1));
                }
                return list;
            }
            case MAP: {
                int n = u.unpackMapHeader();
                Map<Object, Object> map = new LinkedHashMap<>();
                for (int i = 0; i < n; i++) {
                    Object k = unpack(u, depth + 1);
                    map.put(k, unpack(u, depth + 1));
                }
                return map;
            }
            case EXTENSION: {
                var h = u.unpackExtensionTypeHeader();
                return new Ext(h.getType(), u.readPayload(h.getLength()));
            }
            default:
                throw new IOException("unknown msgpack format " + f);
        }
    }
}
