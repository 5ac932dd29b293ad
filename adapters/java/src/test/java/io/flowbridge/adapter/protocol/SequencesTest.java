package io.flowbridge.adapter.protocol;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.flowbridge.adapter.Json;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.HexFormat;
import java.util.List;
import java.util.Map;
import java.util.stream.Stream;
import org.junit.jupiter.api.DynamicTest;
import org.junit.jupiter.api.TestFactory;

/**
 * The shared vectors' sequences (SPEC.md section 7): each conversation replayed through a
 * bridge's and a child's {@link Connection}, step by step. A step with an event passes
 * both; a step with an error is refused by its sender and rejected by its receiver, with
 * that kind.
 */
public class SequencesTest {
    @SuppressWarnings("unchecked")
    public static List<Map<String, Object>> sequences() throws IOException {
        Map<String, Object> all = (Map<String, Object>) Json.parse(Files.readAllBytes(Path.of("../../protocol/vectors.json")));
        Object s = all.get("sequences");
        return s == null ? List.of() : (List<Map<String, Object>>) s;
    }

    public static Message decode(Map<String, Object> step) throws ProtocolException {
        byte[] frame = HexFormat.of().parseHex((String) step.get("hex"));
        FrameDecoder d = new FrameDecoder();
        List<Message> got = d.receive(frame, 0, frame.length);
        d.end();
        assertEquals(1, got.size());
        return got.get(0);
    }

    @TestFactory
    Stream<DynamicTest> everySequenceReplaysOnBothSides() throws IOException {
        List<Map<String, Object>> sequences = sequences();
        assertTrue(sequences.size() >= 40 || sequences.isEmpty(), "sequences: " + sequences.size());
        return sequences.stream().map(seq -> DynamicTest.dynamicTest((String) seq.get("name"), () -> {
            Connection bridge = new Connection(Schema.Role.BRIDGE);
            Connection child = new Connection(Schema.Role.CHILD);
            @SuppressWarnings("unchecked")
            List<Map<String, Object>> steps = (List<Map<String, Object>>) seq.get("steps");
            for (int i = 0; i < steps.size(); i++) {
                Map<String, Object> step = steps.get(i);
                Message m = decode(step);
                boolean fromBridge = "bridge".equals(step.get("from"));
                Connection sender = fromBridge ? bridge : child;
                Connection receiver = fromBridge ? child : bridge;
                String where = seq.get("name") + " step " + i + " (" + m.type() + " from " + step.get("from") + ")";
                if (step.get("error") != null) {
                    String kind = (String) step.get("error");
                    ProtocolException refused = assertThrows(ProtocolException.class, () -> sender.send(m), where);
                    assertEquals(kind, refused.kind().wireName(), where + ": " + refused.getMessage());
                    ProtocolException rejected = assertThrows(ProtocolException.class, () -> receiver.receive(m), where);
                    assertEquals(kind, rejected.kind().wireName(), where + ": " + rejected.getMessage());
                    assertEquals(steps.size() - 1, i, "an error ends its sequence");
                    return;
                }
                assertNotNull(step.get("event"), where);
                assertEquals(step.get("event"), m.type(), where);
                sender.send(m);
                receiver.receive(m);
                assertEquals(sender.state(), receiver.state(), where);
            }
        }));
    }
}
