package io.flowbridge.examples.echo;

import io.flowbridge.adapter.HandlerException;
import io.flowbridge.adapter.Json;
import io.flowbridge.adapter.Plugin;
import io.flowbridge.adapter.Request;
import java.nio.charset.StandardCharsets;
import java.util.LinkedHashMap;
import java.util.Map;

/**
 * The Java echo example of flow-bridge: the handler that SPEC.md's "echo contract"
 * describes, which the conformance suite drives.
 *
 * <p>ECHO_BREAK breaks one behaviour on purpose (SPEC.md, the ECHO_BREAK table):
 * ignore-cancel, count-bytes, no-debug or hang-on-stop.
 */
public final class Echo {
    private static final String BREAK = System.getenv().getOrDefault("ECHO_BREAK", "");

    private Echo() {}

    static Object execute(Request request) throws Exception {
        Map<String, Object> config = request.configMap();
        if (config == null) { // not a JSON object
            return Map.of("raw", request.rawConfig());
        }
        if (config.get("fail") instanceof String fail) {
            throw new HandlerException(fail);
        }
        if (config.get("print") instanceof String text) {
            System.out.println(text); // lands on stderr: the adapter keeps System.out off the frames
        }
        if (config.get("log") instanceof String text) {
            request.log().info(text);
        }
        if (config.get("sleep_ms") instanceof Number ms) {
            long millis = (long) ms.doubleValue();
            if (BREAK.equals("ignore-cancel")) {
                sleepIgnoringInterrupts(millis);
            } else {
                Thread.sleep(millis); // a cancel interrupts it: answered as the error "cancelled"
            }
        }
        int n = 0;
        if (config.get("payload") instanceof String payload) {
            n = BREAK.equals("count-bytes")
                    ? payload.getBytes(StandardCharsets.UTF_8).length
                    : payload.codePointCount(0, payload.length());
        }
        Map<String, Object> data = new LinkedHashMap<>();
        data.put("i", config.get("i"));
        data.put("n", n);
        if (config.containsKey("echo")) {
            data.put("echo", config.get("echo"));
        }
        return data;
    }

    static Object debug(Request request) throws Exception {
        Map<String, Object> config = request.configMap();
        request.log().info("debug " + Json.write(config == null ? null : config.get("i")));
        return execute(request);
    }

    private static void sleepIgnoringInterrupts(long millis) {
        long deadline = System.nanoTime() + millis * 1_000_000L;
        boolean interrupted = false;
        for (long left; (left = deadline - System.nanoTime()) > 0; ) {
            try {
                Thread.sleep(left / 1_000_000L, (int) (left % 1_000_000L));
            } catch (InterruptedException e) {
                interrupted = true;
            }
        }
        if (interrupted) {
            Thread.currentThread().interrupt();
        }
    }

    public static void main(String[] args) {
        Plugin.builder(Echo::execute)
                .debug(BREAK.equals("no-debug") ? null : Echo::debug)
                .onStop(() -> {
                    if (BREAK.equals("hang-on-stop")) {
                        while (true) {
                            Thread.sleep(3_600_000L);
                        }
                    }
                })
                .concurrency(256)
                .name("echo-java")
                .version("1.0.0")
                .build()
                .run(); // exits 0 after stop or end of input
    }
}
