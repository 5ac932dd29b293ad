package io.flowbridge.adapter;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.flowbridge.adapter.protocol.Message;
import java.nio.charset.StandardCharsets;
import java.util.List;
import java.util.Map;
import java.util.Optional;
import org.junit.jupiter.api.Test;

class ConfigBindingTest {
    enum Mode { FAST, SLOW }

    record Limits(double min, double max) {
        Limits {
            if (min > max) {
                throw new IllegalArgumentException("min must not exceed max");
            }
        }
    }

    record Config(int i, String payload, Mode mode, List<Long> ids, Map<String, Integer> weights,
                  Limits limits, Optional<String> note, Object raw, Boolean flag) {}

    private static Request task(String json) {
        return new Request(new Message.Request(false, 1, json.getBytes(StandardCharsets.UTF_8), "", "", "", "", "", 0),
                null);
    }

    @Test
    void bindsMembersByName() throws Exception {
        Config c = task("{\"i\": 7, \"payload\": \"温度\", \"mode\": \"SLOW\", \"ids\": [1, 2], \"weights\": {\"a\": 3},"
                + " \"limits\": {\"min\": 0, \"max\": 1.5}, \"raw\": [1, {\"x\": null}], \"extra\": true}")
                .configAs(Config.class);
        assertEquals(7, c.i());
        assertEquals("温度", c.payload());
        assertEquals(Mode.SLOW, c.mode());
        assertEquals(List.of(1L, 2L), c.ids());
        assertEquals(Map.of("a", 3), c.weights());
        assertEquals(new Limits(0, 1.5), c.limits());
        assertEquals(Optional.empty(), c.note());
        assertEquals("[1, {x=null}]", String.valueOf(c.raw()));
        assertEquals(null, c.flag());
    }

    @Test
    void mismatchesNameThePath() {
        assertMessage("{\"i\": \"7\"}", "invalid config: $.i must be a number, got a string");
        assertMessage("{}", "invalid config: $.i is missing or null; expected a number");
        assertMessage("{\"i\": 1.5}", "invalid config: $.i is 1.5; expected a whole number");
        assertMessage("{\"i\": 1, \"ids\": [1, \"x\"]}", "invalid config: $.ids[1] must be a number, got a string");
        assertMessage("{\"i\": 1, \"mode\": \"MEDIUM\"}", "invalid config: $.mode is \"MEDIUM\"; expected one of [FAST, SLOW]");
        assertMessage("{\"i\": 1, \"limits\": {\"min\": 2, \"max\": 1}}", "invalid config: $.limits: min must not exceed max");
        assertMessage("{\"i\": 3000000000}", "invalid config: $.i is 3000000000, out of range for int");
        assertMessage("[1]", "invalid config: $ must be an object, got an array");
        assertMessage("not json", "invalid config: the config is not UTF-8 JSON");
    }

    private static void assertMessage(String json, String message) {
        HandlerException e = assertThrows(HandlerException.class, () -> task(json).configAs(Config.class));
        assertEquals(message, e.getMessage());
    }

    @Test
    void primitivesAndBoxesConvertExactly() throws Exception {
        record Numbers(long l, short s, byte b, float f, double d, Number n) {}
        Numbers n = task("{\"l\": 9007199254740993, \"s\": 2, \"b\": -3, \"f\": 0.5, \"d\": 4, \"n\": 5}")
                .configAs(Numbers.class);
        assertEquals(9007199254740993L, n.l());
        assertEquals(2, n.s());
        assertEquals(-3, n.b());
        assertEquals(0.5f, n.f());
        assertEquals(4.0, n.d());
        assertEquals(5L, n.n());
        assertTrue(task("{}").configIsJson());
    }
}
