package io.flowbridge.adapter;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;

import java.math.BigInteger;
import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;

class JsonTest {
    @Test
    void parsesEveryKindOfValue() {
        Object v = Json.parse("{\"i\": 1, \"f\": 1.5, \"e\": 1e3, \"s\": \"中文\", \"n\": null, \"b\": [true, false],"
                + " \"big\": 18446744073709551615, \"neg\": -9223372036854775808, \"o\": {}}");
        Map<String, Object> want = new LinkedHashMap<>();
        want.put("i", 1L);
        want.put("f", 1.5);
        want.put("e", 1000.0);
        want.put("s", "中文");
        want.put("n", null);
        want.put("b", List.of(true, false));
        want.put("big", new BigInteger("18446744073709551615"));
        want.put("neg", Long.MIN_VALUE);
        want.put("o", Map.of());
        assertEquals(want, v);
    }

    @Test
    void escapesJoinSurrogatePairs() {
        String s = (String) Json.parse("\"\\u6d41\\ud83d\\ude42\\n\\\"\\/\"");
        assertEquals("流🙂\n\"/", s);
        assertEquals(5, s.codePointCount(0, s.length()));
    }

    @Test
    void aRepeatedKeyKeepsItsLastValue() {
        assertEquals(Map.of("a", 2L), Json.parse("{\"a\": 1, \"a\": 2}"));
    }

    @ParameterizedTest
    @ValueSource(strings = {"", " ", "not json", "{", "[1,]", "{\"a\" 1}", "01", "1.", "-", "\"\\x\"", "\"a",
        "nul", "[1] 2", "\"\u0001\"", "{'a': 1}", "1e", "+1"})
    void refusesWhatIsNotJson(String text) {
        assertThrows(Json.JsonException.class, () -> Json.parse(text));
    }

    @Test
    void refusesInvalidUtf8AndDeepNesting() {
        assertThrows(Json.JsonException.class, () -> Json.parse(new byte[] {'"', (byte) 0xff, '"'}));
        char[] deep = new char[5000];
        Arrays.fill(deep, '[');
        assertThrows(Json.JsonException.class, () -> Json.parse(new String(deep)));
    }

    record Point(int x, String label) {}

    @Test
    void writesCompactJson() {
        Map<String, Object> m = new LinkedHashMap<>();
        m.put("s", "a\"b\n\u0001");
        m.put("n", null);
        m.put("l", List.of(1, 2.5, true));
        m.put("bin", new byte[] {0, (byte) 0xff});
        m.put("rec", new Point(3, "p"));
        m.put("null", Json.NULL);
        assertEquals("{\"s\":\"a\\\"b\\n\\u0001\",\"n\":null,\"l\":[1,2.5,true],\"bin\":\"AP8=\","
                + "\"rec\":{\"x\":3,\"label\":\"p\"},\"null\":null}", Json.write(m));
        assertEquals("5", Json.write(5L));
        assertEquals("null", Json.write(null));
        assertThrows(IllegalArgumentException.class, () -> Json.write(Double.NaN));
    }
}
