package io.flowbridge.adapter.protocol;

import static org.junit.jupiter.api.Assertions.assertEquals;

import java.nio.charset.StandardCharsets;
import java.util.HexFormat;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.CsvSource;

class Utf8Test {
    @ParameterizedTest(name = "{0} -> {1}")
    @CsvSource({
        "'', true",
        "41, true",
        "c3a9, true",              // é
        "e6b8a9, true",            // 温
        "f09f9982, true",          // 🙂
        "f48fbfbf, true",          // U+10FFFF
        "c0af, false",             // overlong '/'
        "e080af, false",           // overlong
        "eda080, false",           // a UTF-16 surrogate
        "f4908080, false",         // past U+10FFFF
        "e6b8, false",             // cut short
        "80, false",               // a lone continuation byte
        "fe, false",
        "c328, false",             // a continuation byte missing
    })
    void checksStrictly(String hex, boolean valid) {
        byte[] b = HexFormat.of().parseHex(hex);
        assertEquals(valid, Utf8.isValid(b, 0, b.length));
        if (valid) {
            assertEquals(new String(b, StandardCharsets.UTF_8), Utf8.decode(b));
        }
    }
}
