package io.flowbridge.adapter.protocol;

import io.flowbridge.adapter.protocol.ProtocolException.Kind;
import io.flowbridge.adapter.protocol.Schema.MsgType;
import java.io.IOException;
import java.math.BigInteger;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.HashSet;
import java.util.List;
import java.util.Map;
import java.util.Set;
import org.msgpack.core.MessageBufferPacker;
import org.msgpack.core.MessageFormat;
import org.msgpack.core.MessagePack;
import org.msgpack.core.MessagePackException;
import org.msgpack.core.MessageUnpacker;

/**
 * Frame bodies to messages and messages to frames (SPEC.md sections 1 and 3). No I/O:
 * {@link FrameDecoder} cuts a byte stream into bodies, this class gives them meaning.
 *
 * <p>Decoding is two passes over the body. The first walks every value without building
 * anything, so that invalid msgpack, invalid UTF-8 in any str (also under keys nobody
 * reads) and trailing bytes are {@code bad_msgpack} whatever the message says. The second
 * reads the known fields of the message's type and checks their types and ranges.
 */
public final class MessageCodec {
    private MessageCodec() {}

    // -- decoding ---------------------------------------------------------------------------

    /** Decodes and validates one frame body. */
    public static Message decode(byte[] body) throws ProtocolException {
        if (body.length == 0) {
            throw new ProtocolException(Kind.BAD_MSGPACK, "empty frame: a frame must hold one msgpack map");
        }
        checkWellFormed(body);
        Map<String, Object> fields = new HashMap<>();
        try (MessageUnpacker u = MessagePack.newDefaultUnpacker(body)) {
            MessageFormat f = u.getNextFormat();
            if (f.getValueType() != org.msgpack.value.ValueType.MAP) {
                throw new ProtocolException(Kind.NOT_A_MAP,
                        "a frame must hold a msgpack map, got a msgpack " + f.getValueType().name().toLowerCase());
            }
            int n = u.unpackMapHeader();
            for (int i = 0; i < n; i++) {
                if (u.getNextFormat().getValueType() != org.msgpack.value.ValueType.STRING) {
                    u.skipValue(2); // a key that is not a str names no field
                    continue;
                }
                String key = Values.unpackStr(u);
                if (FIELDS.contains(key)) {
                    fields.put(key, Values.unpack(u)); // a repeated key counts with its last value
                } else {
                    u.skipValue();
                }
            }
        } catch (IOException | MessagePackException e) {
            throw new ProtocolException(Kind.BAD_MSGPACK, "frame is not valid msgpack: " + e.getMessage());
        }
        return fromFields(fields);
    }

    /** Every field name of any message type, and {@code type}: the keys decode keeps. */
    private static final Set<String> FIELDS = knownFields();

    private static Set<String> knownFields() {
        Set<String> names = new HashSet<>();
        names.add("type");
        for (MsgType t : MsgType.values()) {
            names.addAll(t.fields());
        }
        return Set.copyOf(names);
    }

    /** The first pass: the body is exactly one valid msgpack value, every str UTF-8. */
    private static void checkWellFormed(byte[] body) throws ProtocolException {
        try (MessageUnpacker u = MessagePack.newDefaultUnpacker(body)) {
            // Values still to walk. Containers add their children, so no recursion is needed
            // and no nesting can overflow the stack; each value costs at least one byte, so a
            // header that claims more children than the body holds ends at the body's end.
            long remaining = 1;
            while (remaining > 0) {
                if (!u.hasNext()) {
                    throw new ProtocolException(Kind.BAD_MSGPACK, "frame is not valid msgpack: it ends inside its value");
                }
                remaining--;
                MessageFormat f = u.getNextFormat();
                if (f == MessageFormat.NEVER_USED) {
                    throw new ProtocolException(Kind.BAD_MSGPACK, "frame is not valid msgpack: byte 0xc1 is never used");
                }
                switch (f.getValueType()) {
                    case STRING: {
                        int n = u.unpackRawStringHeader();
                        // The unpacker reads `body` from its start, so its count is the payload's index:
                        // the UTF-8 is checked in place, and the payload skipped without a copy.
                        long at = u.getTotalReadBytes();
                        if (at + n > body.length) {
                            throw new ProtocolException(Kind.BAD_MSGPACK, "frame is not valid msgpack: it ends inside a str");
                        }
                        if (!Utf8.isValid(body, (int) at, n)) {
                            throw new ProtocolException(Kind.BAD_MSGPACK, "frame holds a str that is not valid UTF-8");
                        }
                        u.readPayloadAsReference(n);
                        break;
                    }
                    case ARRAY:
                        remaining += Integer.toUnsignedLong(u.unpackArrayHeader());
                        break;
                    case MAP:
                        remaining += 2 * Integer.toUnsignedLong(u.unpackMapHeader());
                        break;
                    default:
                        u.skipValue();
                }
            }
            if (u.hasNext()) {
                throw new ProtocolException(Kind.BAD_MSGPACK, "frame holds "
                        + (body.length - u.getTotalReadBytes()) + " bytes after its msgpack value");
            }
        } catch (IOException | MessagePackException e) {
            throw new ProtocolException(Kind.BAD_MSGPACK, "frame is not valid msgpack: " + e.getMessage());
        }
    }

    private static Message fromFields(Map<String, Object> f) throws ProtocolException {
        Object t = f.get("type");
        if (t == null && !f.containsKey("type")) {
            throw new ProtocolException(Kind.MISSING_TYPE, "the frame's map has no 'type' field");
        }
        if (!(t instanceof String type)) {
            throw new ProtocolException(Kind.MISSING_TYPE, "the frame's 'type' field is not a string");
        }
        MsgType msgType = MsgType.of(type);
        if (msgType == null) {
            throw new ProtocolException(Kind.UNKNOWN_TYPE, "unknown message type \"" + type + "\"");
        }
        Fields r = new Fields(type, f);
        r.require(msgType.required());
        switch (msgType) {
            case HELLO: {
                List<Long> protocols = r.protocols();
                String plugin = r.str("plugin", "");
                String pt = r.str("plugin_type", "service");
                PluginType pluginType = PluginType.fromWire(pt);
                if (pluginType == null) {
                    throw r.bad("plugin_type", "must be service or user, got \"" + pt + "\"");
                }
                int maxFrame = (int) r.uint("max_frame", Protocol.DEFAULT_MAX_FRAME, Protocol.MIN_MAX_FRAME,
                        Protocol.MAX_MAX_FRAME);
                return new Message.Hello(protocols, plugin, pluginType, maxFrame, r.str("bridge", ""));
            }
            case READY: {
                PluginType declared = null; // in ready, absent means not declared
                if (f.containsKey("plugin_type")) {
                    String pt = r.str("plugin_type", "");
                    declared = PluginType.fromWire(pt);
                    if (declared == null) {
                        throw r.bad("plugin_type", "must be service or user, got \"" + pt + "\"");
                    }
                }
                return new Message.Ready(r.uint("protocol", 1, 1, Long.MAX_VALUE),
                        (int) r.uint("concurrency", 1, 1, Protocol.MAX_CONCURRENCY),
                        r.bool("debug", false), r.str("name", ""), r.str("version", ""), declared);
            }
            case TASK:
            case DEBUG: {
                boolean debug = msgType == MsgType.DEBUG;
                return new Message.Request(debug, r.id(), r.bin("config"), r.str("project_id", ""),
                        r.str("flow_id", ""), debug ? "" : r.str("job", ""), r.str("element_id", ""),
                        r.str("element_job", ""), r.uint("timeout_ms", 0, 0, Long.MAX_VALUE));
            }
            case RESULT: {
                // Any value: SPEC 5 lets the bridge turn a non-map into JSON as well.
                Object data = f.containsKey("data") ? f.get("data") : Map.of();
                return new Message.Result(r.id(), data, r.str("message", ""), r.str("detail", ""));
            }
            case ERROR:
                // Any value; nil is the same as absent.
                return new Message.Error(r.id(), r.str("message", ""), r.str("detail", ""), f.get("data"));
            case LOG: {
                String lv = r.str("level", "");
                LogLevel level = LogLevel.fromWire(lv);
                if (level == null) {
                    throw r.bad("level", "must be debug, info, warning or error, got \"" + lv + "\"");
                }
                Long id = f.get("id") == null ? null : r.id(); // a nil log id means none
                return new Message.Log(level, r.str("msg", ""), id, r.str("time", ""));
            }
            case CANCEL:
                return new Message.Cancel(r.id(), r.str("reason", "timeout"));
            case STATE:
                return new Message.State(r.bool("connected", false));
            case STOP:
                return new Message.Stop();
            default:
                throw new IllegalStateException("no decoder for message type " + type);
        }
    }

    /** Typed access to one message's decoded fields, each failure a {@code bad_field}. */
    private static final class Fields {
        private final String type;
        private final Map<String, Object> f;

        Fields(String type, Map<String, Object> f) {
            this.type = type;
            this.f = f;
        }

        ProtocolException bad(String field, String why) {
            return new ProtocolException(Kind.BAD_FIELD, "invalid " + type + " message: field " + field + " " + why);
        }

        void require(List<String> names) throws ProtocolException {
            List<String> missing = new ArrayList<>();
            for (String n : names) {
                if (!f.containsKey(n)) {
                    missing.add(n);
                }
            }
            if (!missing.isEmpty()) {
                throw new ProtocolException(Kind.BAD_FIELD,
                        type + " message lacks required field(s) " + String.join(", ", missing));
            }
        }

        String str(String name, String dflt) throws ProtocolException {
            if (!f.containsKey(name)) {
                return dflt;
            }
            if (f.get(name) instanceof String s) {
                return s;
            }
            throw bad(name, "must be a string");
        }

        boolean bool(String name, boolean dflt) throws ProtocolException {
            if (!f.containsKey(name)) {
                return dflt;
            }
            if (f.get(name) instanceof Boolean b) {
                return b;
            }
            throw bad(name, "must be a boolean");
        }

        byte[] bin(String name) throws ProtocolException {
            if (f.get(name) instanceof byte[] b) {
                return b;
            }
            throw bad(name, "must be bytes (msgpack bin)");
        }

        /** An integer in min..max; past Long.MAX_VALUE it is clamped when max allows that. */
        long uint(String name, long dflt, long min, long max) throws ProtocolException {
            if (!f.containsKey(name)) {
                return dflt;
            }
            Object v = f.get(name);
            if (v instanceof BigInteger && max == Long.MAX_VALUE) {
                return Long.MAX_VALUE; // a uint64 timeout beyond what a long holds is "forever" anyway
            }
            if (v instanceof Long l && l >= min && l <= max) {
                return l;
            }
            throw bad(name, "must be an integer in " + min + ".." + (max == Long.MAX_VALUE ? "2**64-1" : max));
        }

        long id() throws ProtocolException {
            if (f.get("id") instanceof Long l && l >= 0 && l <= Protocol.MAX_ID) {
                return l;
            }
            throw bad("id", "must be an integer in 0..2**53-1");
        }

        List<Long> protocols() throws ProtocolException {
            if (f.get("protocols") instanceof List<?> list && !list.isEmpty()) {
                List<Long> out = new ArrayList<>(list.size());
                for (Object o : list) {
                    if (o instanceof Long l && l >= 1) {
                        out.add(l);
                    } else if (o instanceof BigInteger) {
                        out.add(Long.MAX_VALUE); // a version this far ahead is only "newer"
                    } else {
                        throw bad("protocols", "must be a non-empty array of positive integers");
                    }
                }
                return out;
            }
            throw bad("protocols", "must be a non-empty array of positive integers");
        }
    }

    // -- encoding ---------------------------------------------------------------------------

    /**
     * The whole frame (header and body) of {@code m} in canonical form: {@code type} first,
     * then the fields in SPEC order, every one written except the optional ones that are
     * absent (a log's id, a ready's plugin_type, an error's data).
     * An {@link UnencodableValueException} means result data msgpack cannot carry.
     */
    public static byte[] encode(Message m) {
        MessageBufferPacker p = PACKER_CONFIG.newBufferPacker();
        try {
            p.writePayload(new byte[Protocol.HEADER_BYTES]); // filled in once the body's size is known
            writeBody(p, m);
            p.flush();
        } catch (IOException e) {
            throw new IllegalStateException("writing to memory failed", e);
        }
        byte[] frame = p.toByteArray();
        int n = frame.length - Protocol.HEADER_BYTES;
        frame[0] = (byte) (n >>> 24);
        frame[1] = (byte) (n >>> 16);
        frame[2] = (byte) (n >>> 8);
        frame[3] = (byte) n;
        return frame;
    }

    /** Most frames are small: start with a small buffer rather than msgpack-core's 8 KiB. */
    private static final MessagePack.PackerConfig PACKER_CONFIG = new MessagePack.PackerConfig().withBufferSize(512);

    private static void writeBody(MessageBufferPacker p, Message m) throws IOException {
        if (m instanceof Message.Hello h) {
            head(p, h, 0);
            p.packString("protocols").packArrayHeader(h.protocols().size());
            for (long v : h.protocols()) {
                p.packLong(v);
            }
            p.packString("plugin").packString(h.plugin());
            p.packString("plugin_type").packString(h.pluginType().wireName());
            p.packString("max_frame").packLong(h.maxFrame());
            p.packString("bridge").packString(h.bridge());
        } else if (m instanceof Message.Ready r) {
            head(p, r, r.pluginType() == null ? 1 : 0);
            p.packString("protocol").packLong(r.protocol());
            p.packString("concurrency").packLong(r.concurrency());
            p.packString("debug").packBoolean(r.debug());
            p.packString("name").packString(r.name());
            p.packString("version").packString(r.version());
            if (r.pluginType() != null) {
                p.packString("plugin_type").packString(r.pluginType().wireName());
            }
        } else if (m instanceof Message.Request r) {
            head(p, r, 0);
            p.packString("id").packLong(r.id());
            p.packString("config").packBinaryHeader(r.config().length).writePayload(r.config());
            p.packString("project_id").packString(r.projectId());
            p.packString("flow_id").packString(r.flowId());
            if (!r.debug()) {
                p.packString("job").packString(r.job());
            }
            p.packString("element_id").packString(r.elementId());
            p.packString("element_job").packString(r.elementJob());
            p.packString("timeout_ms").packLong(r.timeoutMs());
        } else if (m instanceof Message.Result r) {
            head(p, r, 0);
            p.packString("id").packLong(r.id());
            p.packString("data");
            Values.pack(p, r.data());
            p.packString("message").packString(r.message());
            p.packString("detail").packString(r.detail());
        } else if (m instanceof Message.Error e) {
            head(p, e, e.data() == null ? 1 : 0);
            p.packString("id").packLong(e.id());
            p.packString("message").packString(e.message());
            p.packString("detail").packString(e.detail());
            if (e.data() != null) {
                p.packString("data");
                Values.pack(p, e.data());
            }
        } else if (m instanceof Message.Log l) {
            head(p, l, l.id() == null ? 1 : 0);
            p.packString("level").packString(l.level().wireName());
            p.packString("msg").packString(l.msg());
            if (l.id() != null) {
                p.packString("id").packLong(l.id());
            }
            p.packString("time").packString(l.time());
        } else if (m instanceof Message.Cancel c) {
            head(p, c, 0);
            p.packString("id").packLong(c.id());
            p.packString("reason").packString(c.reason());
        } else if (m instanceof Message.State s) {
            head(p, s, 0);
            p.packString("connected").packBoolean(s.connected());
        } else if (m instanceof Message.Stop) {
            head(p, m, 0);
        } else {
            throw new IllegalArgumentException("unknown message " + m);
        }
    }

    /**
     * The map header and {@code type} of {@code m}'s frame: one entry for {@code type} and one
     * for each of its type's fields, but the {@code omitted} optional ones that are absent.
     */
    private static void head(MessageBufferPacker p, Message m, int omitted) throws IOException {
        MsgType t = m.msgType();
        p.packMapHeader(1 + t.fields().size() - omitted).packString("type").packString(t.wireName());
    }
}
