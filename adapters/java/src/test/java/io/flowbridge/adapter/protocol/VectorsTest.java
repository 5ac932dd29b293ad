package io.flowbridge.adapter.protocol;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assertions.fail;

import io.flowbridge.adapter.Json;
import java.io.IOException;
import java.math.BigInteger;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.HexFormat;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.stream.Stream;
import org.junit.jupiter.api.DynamicTest;
import org.junit.jupiter.api.TestFactory;
import org.msgpack.core.MessagePack;
import org.msgpack.core.MessageUnpacker;

/**
 * The shared vectors of protocol/vectors.json (SPEC.md, "Test vectors"): every valid
 * frame decodes to its value, fed whole, one byte at a time and followed by the start of
 * another frame; every canonical one encodes back byte for byte; every invalid one is
 * refused with its kind.
 */
class VectorsTest {
    private static final Path VECTORS = Path.of("../../protocol/vectors.json");
    private static final HexFormat HEX = HexFormat.of();

    @SuppressWarnings("unchecked")
    private static Map<String, Object> vectors() throws IOException {
        return (Map<String, Object>) Json.parse(Files.readAllBytes(VECTORS));
    }

    @SuppressWarnings("unchecked")
    private static List<Map<String, Object>> list(String key) throws IOException {
        Object v = vectors().get(key);
        return v == null ? List.of() : (List<Map<String, Object>>) v;
    }

    private static byte[] unhex(Object s) {
        return HEX.parseHex((String) s);
    }

    /** A vector's JSON value as the decoder's plain value: {"$bin": hex} is bytes. */
    static Object fromJson(Object v) {
        if (v instanceof Map<?, ?> m) {
            if (m.size() == 1 && m.containsKey("$bin")) {
                return unhex(m.get("$bin"));
            }
            Map<Object, Object> out = new LinkedHashMap<>();
            m.forEach((k, x) -> out.put(k, fromJson(x)));
            return out;
        }
        if (v instanceof List<?> l) {
            List<Object> out = new ArrayList<>();
            l.forEach(x -> out.add(fromJson(x)));
            return out;
        }
        return v;
    }

    /** Deep equality with byte arrays compared by content and numbers by value. */
    static boolean same(Object a, Object b) {
        if (a instanceof byte[] x && b instanceof byte[] y) {
            return java.util.Arrays.equals(x, y);
        }
        if (a instanceof Number x && b instanceof Number y) {
            if (x instanceof Double || y instanceof Double) {
                return x.doubleValue() == y.doubleValue();
            }
            return new BigInteger(x.toString()).equals(new BigInteger(y.toString()));
        }
        if (a instanceof Map<?, ?> x && b instanceof Map<?, ?> y) {
            if (x.size() != y.size()) {
                return false;
            }
            for (Map.Entry<?, ?> e : x.entrySet()) {
                if (!y.containsKey(e.getKey()) || !same(e.getValue(), y.get(e.getKey()))) {
                    return false;
                }
            }
            return true;
        }
        if (a instanceof List<?> x && b instanceof List<?> y) {
            if (x.size() != y.size()) {
                return false;
            }
            for (int i = 0; i < x.size(); i++) {
                if (!same(x.get(i), y.get(i))) {
                    return false;
                }
            }
            return true;
        }
        return java.util.Objects.equals(a, b);
    }

    private static String show(Object v) {
        if (v instanceof byte[] b) {
            return "bin:" + HEX.formatHex(b);
        }
        if (v instanceof Map<?, ?> m) {
            Map<Object, String> out = new LinkedHashMap<>();
            m.forEach((k, x) -> out.put(k, show(x)));
            return out.toString();
        }
        return String.valueOf(v);
    }

    /** A decoded message as the map of every field it has, defaults included. */
    static Map<String, Object> fieldsOf(Message m) {
        Map<String, Object> f = new LinkedHashMap<>();
        f.put("type", m.type());
        if (m instanceof Message.Hello h) {
            f.put("protocols", h.protocols());
            f.put("plugin", h.plugin());
            f.put("plugin_type", h.pluginType().wireName());
            f.put("max_frame", (long) h.maxFrame());
            f.put("bridge", h.bridge());
        } else if (m instanceof Message.Ready r) {
            f.put("protocol", r.protocol());
            f.put("concurrency", (long) r.concurrency());
            f.put("debug", r.debug());
            f.put("name", r.name());
            f.put("version", r.version());
            if (r.pluginType() != null) {
                f.put("plugin_type", r.pluginType().wireName());
            }
        } else if (m instanceof Message.Request r) {
            f.put("id", r.id());
            f.put("config", r.config());
            f.put("project_id", r.projectId());
            f.put("flow_id", r.flowId());
            if (!r.debug()) {
                f.put("job", r.job());
            }
            f.put("element_id", r.elementId());
            f.put("element_job", r.elementJob());
            f.put("timeout_ms", r.timeoutMs());
        } else if (m instanceof Message.Result r) {
            f.put("id", r.id());
            f.put("data", r.data());
            f.put("message", r.message());
            f.put("detail", r.detail());
        } else if (m instanceof Message.Error e) {
            f.put("id", e.id());
            f.put("message", e.message());
            f.put("detail", e.detail());
            if (e.data() != null) {
                f.put("data", e.data());
            }
        } else if (m instanceof Message.Log l) {
            f.put("level", l.level().wireName());
            f.put("msg", l.msg());
            if (l.id() != null) {
                f.put("id", l.id());
            }
            f.put("time", l.time());
        } else if (m instanceof Message.Cancel c) {
            f.put("id", c.id());
            f.put("reason", c.reason());
        } else if (m instanceof Message.State s) {
            f.put("connected", s.connected());
        }
        return f;
    }

    /** Fields a receiver assumes when they are missing (SPEC.md section 3). */
    private static Map<String, Object> withDefaults(Map<String, Object> value) {
        Map<String, Object> d = new LinkedHashMap<>();
        switch ((String) value.get("type")) {
            case "hello":
                d.put("plugin_type", "service");
                d.put("max_frame", (long) Protocol.DEFAULT_MAX_FRAME);
                d.put("bridge", "");
                break;
            case "ready":
                d.put("concurrency", 1L);
                d.put("debug", false);
                d.put("name", "");
                d.put("version", "");
                break;
            case "task":
            case "debug":
                if (value.get("type").equals("task")) {
                    d.put("job", "");
                }
                d.put("project_id", "");
                d.put("flow_id", "");
                d.put("element_id", "");
                d.put("element_job", "");
                d.put("timeout_ms", 0L);
                break;
            case "result":
                d.put("data", Map.of());
                d.put("message", "");
                d.put("detail", "");
                break;
            case "error":
                d.put("detail", "");
                break;
            case "log":
                d.put("time", "");
                break;
            case "cancel":
                d.put("reason", "timeout");
                break;
            default:
                break;
        }
        Map<String, Object> out = new LinkedHashMap<>(d);
        for (Map.Entry<String, Object> e : value.entrySet()) {
            out.put(e.getKey(), fromJson(e.getValue()));
        }
        if (value.get("type").equals("error") && out.get("data") == null) {
            out.remove("data"); // in an error, nil data is the same as none
        }
        // Keys the protocol does not know are ignored by the receiver.
        out.keySet().retainAll(knownKeys((String) value.get("type"), out.keySet()));
        return out;
    }

    private static java.util.Set<String> knownKeys(String type, java.util.Set<String> keys) {
        java.util.Set<String> known = new java.util.HashSet<>(List.of("type"));
        switch (type) {
            case "hello" -> known.addAll(List.of("protocols", "plugin", "plugin_type", "max_frame", "bridge"));
            case "ready" -> known.addAll(List.of("protocol", "concurrency", "debug", "name", "version", "plugin_type"));
            case "task" -> known.addAll(List.of("id", "config", "project_id", "flow_id", "job", "element_id",
                    "element_job", "timeout_ms"));
            case "debug" -> known.addAll(List.of("id", "config", "project_id", "flow_id", "element_id",
                    "element_job", "timeout_ms"));
            case "result" -> known.addAll(List.of("id", "data", "message", "detail"));
            case "error" -> known.addAll(List.of("id", "message", "detail", "data"));
            case "log" -> known.addAll(List.of("level", "msg", "id", "time"));
            case "cancel" -> known.addAll(List.of("id", "reason"));
            case "state" -> known.add("connected");
            default -> { }
        }
        return known;
    }

    private static List<Message> decodeWhole(byte[] frame, int maxFrame) throws ProtocolException {
        FrameDecoder d = new FrameDecoder(maxFrame);
        List<Message> got = d.receive(frame, 0, frame.length);
        d.end();
        return got;
    }

    private static List<Message> decodeByteByByte(byte[] frame, int maxFrame) throws ProtocolException {
        FrameDecoder d = new FrameDecoder(maxFrame);
        List<Message> got = new ArrayList<>();
        for (int i = 0; i < frame.length; i++) {
            d.receive(frame, i, 1, got);
        }
        d.end();
        return got;
    }

    @TestFactory
    Stream<DynamicTest> validFramesDecodeToTheirValue() throws IOException {
        return list("valid").stream().map(v -> DynamicTest.dynamicTest((String) v.get("name"), () -> {
            byte[] frame = unhex(v.get("hex"));
            @SuppressWarnings("unchecked")
            Map<String, Object> want = withDefaults((Map<String, Object>) v.get("value"));

            // The raw msgpack body is exactly the vector's value.
            try (MessageUnpacker u = MessagePack.newDefaultUnpacker(frame, 4, frame.length - 4)) {
                Object raw = Values.unpack(u);
                assertTrue(same(fromJson(v.get("value")), raw), "raw value " + show(raw));
            }

            List<Message> whole = decodeWhole(frame, Protocol.DEFAULT_MAX_FRAME);
            assertEquals(1, whole.size());
            Map<String, Object> got = fieldsOf(whole.get(0));
            assertTrue(same(want, got), "want " + show(want) + "\n got " + show(got));

            List<Message> bytewise = decodeByteByByte(frame, Protocol.DEFAULT_MAX_FRAME);
            assertEquals(1, bytewise.size());
            assertTrue(same(want, fieldsOf(bytewise.get(0))), "byte by byte");

            // Followed by the first bytes of another frame: one message, the rest pending.
            byte[] more = java.util.Arrays.copyOf(frame, frame.length + 3);
            System.arraycopy(frame, 0, more, frame.length, 3);
            FrameDecoder d = new FrameDecoder();
            List<Message> first = d.receive(more, 0, more.length);
            assertEquals(1, first.size());
            assertTrue(same(want, fieldsOf(first.get(0))), "with trailing bytes");
            assertEquals(3, d.pendingBytes());
            ProtocolException e = assertThrows(ProtocolException.class, d::end);
            assertEquals(ProtocolException.Kind.TRUNCATED, e.kind());
        }));
    }

    @TestFactory
    Stream<DynamicTest> canonicalFramesEncodeByteForByte() throws IOException {
        return list("valid").stream().filter(v -> Boolean.TRUE.equals(v.get("canonical")))
                .map(v -> DynamicTest.dynamicTest((String) v.get("name"), () -> {
                    byte[] frame = unhex(v.get("hex"));
                    Message m = decodeWhole(frame, Protocol.DEFAULT_MAX_FRAME).get(0);
                    assertArrayEquals(frame, MessageCodec.encode(m),
                            () -> "encoded " + HEX.formatHex(MessageCodec.encode(m)) + "\n   want " + v.get("hex"));
                }));
    }

    @TestFactory
    Stream<DynamicTest> invalidFramesAreRefusedWithTheirKind() throws IOException {
        return list("invalid").stream().map(v -> DynamicTest.dynamicTest((String) v.get("name"), () -> {
            byte[] frame = unhex(v.get("hex"));
            int maxFrame = v.get("max_frame") == null ? Protocol.DEFAULT_MAX_FRAME
                    : ((Number) v.get("max_frame")).intValue();
            String want = (String) v.get("error");
            for (boolean bytewise : new boolean[] {false, true}) {
                try {
                    List<Message> got = bytewise ? decodeByteByByte(frame, maxFrame) : decodeWhole(frame, maxFrame);
                    fail("decoded " + got + " instead of refusing it with " + want);
                } catch (ProtocolException e) {
                    assertEquals(want, e.kind().wireName(), e.getMessage());
                }
            }
        }));
    }

    @TestFactory
    Stream<DynamicTest> jsonVectorsDecodeAsMsgpack() throws IOException {
        // Turning data into JSON is the bridge's work; here the data values must decode,
        // and those with a JSON form must encode back to the same bytes.
        return list("json").stream().map(v -> DynamicTest.dynamicTest((String) v.get("name"), () -> {
            byte[] body = unhex(v.get("msgpack_hex"));
            try (MessageUnpacker u = MessagePack.newDefaultUnpacker(body)) {
                Object value = Values.unpack(u);
                assertFalse(u.hasNext());
                if (v.get("json") != null && value instanceof Map<?, ?> m && m.keySet().stream()
                        .allMatch(k -> k instanceof String)) {
                    assertTrue(same(Json.parse((String) v.get("json")), value) || containsBin(value),
                            () -> "value " + show(value));
                }
            }
        }));
    }

    private static boolean containsBin(Object v) {
        return v instanceof Map<?, ?> m && m.values().stream().anyMatch(x -> x instanceof byte[]);
    }
}
