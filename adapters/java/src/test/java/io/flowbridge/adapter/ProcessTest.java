package io.flowbridge.adapter;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.flowbridge.adapter.protocol.FrameDecoder;
import io.flowbridge.adapter.protocol.Message;
import io.flowbridge.adapter.protocol.MessageCodec;
import io.flowbridge.adapter.protocol.PluginType;
import io.flowbridge.adapter.protocol.Protocol;
import java.io.ByteArrayOutputStream;
import java.io.File;
import java.io.OutputStream;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;

/**
 * A real child JVM served through {@link FlowBridge#run}: what it prints with
 * System.out must land on stderr, and stdout must hold nothing but frames.
 */
@Timeout(60)
class ProcessTest {
    /** The handler the child JVM runs. */
    public static final class Child {
        public static void main(String[] args) {
            System.out.print("unflushed banner ");
            Plugin.builder(t -> {
                System.out.println("printed by the handler 日志");
                System.out.flush();
                return Map.of("virtual", isVirtual(Thread.currentThread()));
            }).name("child").build().run();
        }

        static boolean isVirtual(Thread t) {
            try {
                return (Boolean) Thread.class.getMethod("isVirtual").invoke(t);
            } catch (ReflectiveOperationException e) {
                return false;
            }
        }
    }

    private static Process start() throws Exception {
        String java = System.getProperty("java.home") + File.separator + "bin" + File.separator + "java";
        return new ProcessBuilder(java, "-cp", System.getProperty("java.class.path"), Child.class.getName()).start();
    }

    @Test
    void printedTextGoesToStderrAndStdoutHoldsOnlyFrames() throws Exception {
        Process p = start();
        try (OutputStream in = p.getOutputStream()) {
            in.write(MessageCodec.encode(new Message.Hello(List.of(1L), "t", PluginType.SERVICE,
                    Protocol.DEFAULT_MAX_FRAME, "")));
            in.write(MessageCodec.encode(new Message.Request(false, 1, "{}".getBytes(StandardCharsets.UTF_8),
                    "", "", "", "", "", 0)));
            in.write(MessageCodec.encode(new Message.Stop()));
        }
        byte[] out = p.getInputStream().readAllBytes();
        String err = new String(p.getErrorStream().readAllBytes(), StandardCharsets.UTF_8);
        assertTrue(p.waitFor(30, TimeUnit.SECONDS));
        assertEquals(0, p.exitValue(), err);
        assertTrue(err.contains("printed by the handler 日志"), err);

        // Text printed before serve() is flushed to stdout first, where the bridge can name it.
        String banner = "unflushed banner ";
        assertEquals(banner, new String(out, 0, banner.length(), StandardCharsets.US_ASCII));
        FrameDecoder d = new FrameDecoder();
        List<Message> frames = new ArrayList<>(d.receive(out, banner.length(), out.length - banner.length()));
        d.end();
        assertEquals(2, frames.size(), frames.toString());
        assertTrue(frames.get(0) instanceof Message.Ready);
        Message.Result r = (Message.Result) frames.get(1);
        boolean virtualAvailable = Runtime.version().feature() >= 21;
        assertEquals(Map.of("virtual", virtualAvailable), r.data());
    }

    @Test
    void endOfInputBeforeHelloExitsZeroWithoutOutput() throws Exception {
        Process p = start();
        p.getOutputStream().close();
        ByteArrayOutputStream out = new ByteArrayOutputStream();
        p.getInputStream().transferTo(out);
        assertTrue(p.waitFor(30, TimeUnit.SECONDS));
        assertEquals(0, p.exitValue());
        assertEquals("unflushed banner ", out.toString(StandardCharsets.US_ASCII));
    }
}
