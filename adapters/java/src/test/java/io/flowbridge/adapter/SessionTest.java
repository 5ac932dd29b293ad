package io.flowbridge.adapter;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.flowbridge.adapter.protocol.Connection;
import io.flowbridge.adapter.protocol.LogLevel;
import io.flowbridge.adapter.protocol.Message;
import io.flowbridge.adapter.protocol.PluginType;
import io.flowbridge.adapter.protocol.Protocol;
import io.flowbridge.adapter.protocol.ProtocolException;
import io.flowbridge.adapter.protocol.Schema;
import io.flowbridge.adapter.protocol.SequencesTest;
import java.io.ByteArrayOutputStream;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.Collections;
import java.util.HexFormat;
import java.util.List;
import java.util.Map;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.concurrent.atomic.AtomicReference;
import java.util.stream.Stream;
import org.junit.jupiter.api.DynamicTest;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.TestFactory;
import org.junit.jupiter.api.Timeout;
import org.slf4j.LoggerFactory;
import org.slf4j.event.Level;

/** The conversation rules of SPEC.md sections 2 to 4, over in-memory pipes. */
@Timeout(30)
class SessionTest {

    private static Plugin.Builder echo() {
        return Plugin.builder(t -> Map.of("i", t.configMap().get("i")));
    }

    @Test
    void handshakeAnswersHelloWithReady() throws Exception {
        Plugin p = echo().debug(t -> Map.of()).concurrency(8).name("n").version("v").pluginType(PluginType.USER).build();
        try (TestBridge b = new TestBridge(p)) {
            Message.Ready r = b.hello();
            assertEquals(new Message.Ready(1, 8, true, "n", "v", PluginType.USER), r);
            b.closeInput();
            assertEquals(0, b.exitStatus());
        }
    }

    @Test
    void readyNamesTheAdapterWhenTheHandlerHasNoVersion() throws Exception {
        try (TestBridge b = new TestBridge(echo().build())) {
            Message.Ready r = b.hello();
            assertEquals(Session.ADAPTER_VERSION, r.version());
            assertEquals(Plugin.DEFAULT_CONCURRENCY, r.concurrency());
            assertFalse(r.debug());
            assertNull(r.pluginType());
        }
    }

    @Test
    void endOfInputBeforeHelloExitsZero() throws Exception {
        try (TestBridge b = new TestBridge(echo().build())) {
            b.closeInput();
            assertEquals(0, b.exitStatus());
            assertNull(b.next());
        }
    }

    @Test
    void noCommonVersionExitsNonZeroSayingWhy() throws Exception {
        String err = captureStderr(() -> {
            try (TestBridge b = new TestBridge(echo().build())) {
                b.send(new Message.Hello(List.of(99L), "p", PluginType.SERVICE, Protocol.DEFAULT_MAX_FRAME, ""));
                assertEquals(1, b.exitStatus());
                assertNull(b.next()); // no ready
            }
        });
        assertTrue(err.contains("speaks protocol [1], the bridge offers [99]"), err);
        assertTrue(err.contains("upgrade the flow-bridge Java adapter"), err);
    }

    @Test
    void startHookRunsBeforeReadyAndItsFailureEndsTheProcess() throws Exception {
        String err = captureStderr(() -> {
            try (TestBridge b = new TestBridge(echo().onStart(() -> {
                throw new IllegalStateException("no device");
            }).build())) {
                b.send(new Message.Hello(List.of(1L), "p", PluginType.SERVICE, Protocol.DEFAULT_MAX_FRAME, ""));
                assertEquals(1, b.exitStatus());
                assertNull(b.next());
            }
        });
        assertTrue(err.contains("start hook failed") && err.contains("no device"), err);
    }

    @Test
    void answersComeAsTheyFinishNotInOrder() throws Exception {
        Plugin p = Plugin.builder(t -> {
            Thread.sleep(((Number) t.configMap().get("ms")).longValue());
            return Map.of("i", t.configMap().get("i"));
        }).build();
        try (TestBridge b = new TestBridge(p)) {
            b.hello();
            for (int i = 0; i < 64; i++) {
                b.task(i, "{\"i\": " + i + ", \"ms\": " + (5 * (64 - i)) + "}");
            }
            List<Long> order = new ArrayList<>();
            while (order.size() < 64) {
                Message m = b.next();
                if (m instanceof Message.Result r) {
                    order.add(r.id());
                    TestBridge.assertData(Map.of("i", r.id()), r.data());
                }
            }
            // Run at once, they answer by sleep: the short ones (high ids) first. On a busy
            // machine starting 64 threads takes a while, so only the broad order is checked.
            assertTrue(order.get(0) >= 32 && order.indexOf(63L) < order.indexOf(0L), "answered in order " + order);
        }
    }

    @Test
    void idsAtBothEndsOfTheRangeComeBackExactly() throws Exception {
        try (TestBridge b = new TestBridge(echo().build())) {
            b.hello();
            b.task(0, "{\"i\": 0}");
            b.task(Protocol.MAX_ID, "{\"i\": 1}");
            TestBridge.assertData(Map.of("i", 0), b.resultData(0));
            TestBridge.assertData(Map.of("i", 1), b.resultData(Protocol.MAX_ID));
        }
    }

    @Test
    void resultDataMayBeAnyValue() throws Exception {
        Object[] values = {List.of(1, "a"), "温度 ok", -42, 2.5, true, Json.NULL, new byte[] {0, (byte) 0xff}};
        Plugin p = Plugin.builder(t -> values[(int) t.id()]).build();
        try (TestBridge b = new TestBridge(p)) {
            b.hello();
            for (int i = 0; i < values.length; i++) {
                b.task(i, "{}");
            }
            TestBridge.assertData("[1, a]", b.resultData(0));
            assertEquals("温度 ok", b.resultData(1));
            assertEquals(-42L, b.resultData(2));
            assertEquals(2.5, b.resultData(3));
            assertEquals(true, b.resultData(4));
            assertNull(b.resultData(5));
            assertArrayEquals(new byte[] {0, (byte) 0xff}, (byte[]) b.resultData(6));
        }
    }

    record Reading(String unit, double value, List<Integer> raw) {}

    @Test
    void nullMeansAnEmptyMapAndRecordsAreMapsOfTheirComponents() throws Exception {
        Plugin p = Plugin.builder(t -> switch ((int) t.id()) {
            case 1 -> null;
            case 2 -> new Reading("°C", 21.5, List.of(1, 2));
            default -> Reply.of(Map.of("k", 1)).withMessage("ok").withDetail("d");
        }).build();
        try (TestBridge b = new TestBridge(p)) {
            b.hello();
            b.task(1, "{}");
            b.task(2, "{}");
            b.task(3, "{}");
            TestBridge.assertData(Map.of(), b.resultData(1));
            TestBridge.assertData("{unit=°C, value=21.5, raw=[1, 2]}", b.resultData(2));
            Message.Result r = (Message.Result) b.answer(3);
            assertEquals("ok", r.message());
            assertEquals("d", r.detail());
        }
    }

    @Test
    void exceptionsBecomeErrorAnswers() throws Exception {
        Plugin p = Plugin.builder(t -> {
            switch ((int) t.id()) {
                case 1:
                    throw new HandlerException("bad input", "line 3");
                case 2:
                    throw new IllegalArgumentException("boom 测试");
                case 3:
                    throw new NullPointerException();
                case 4:
                    return CompletableFuture.failedFuture(new HandlerException("async failure"));
                default:
                    throw new HandlerException("out of range").withData(Map.of("reading", 120));
            }
        }).build();
        try (TestBridge b = new TestBridge(p)) {
            b.hello();
            for (int i = 1; i <= 5; i++) {
                b.task(i, "{}");
            }
            Message.Error e1 = b.error(1);
            assertEquals("bad input", e1.message());
            assertEquals("line 3", e1.detail());
            Message.Error e2 = b.error(2);
            assertEquals("boom 测试", e2.message());
            assertTrue(e2.detail().contains("IllegalArgumentException") && e2.detail().contains("SessionTest"));
            assertEquals("java.lang.NullPointerException", b.error(3).message());
            assertEquals("async failure", b.error(4).message());
            TestBridge.assertData(Map.of("reading", 120), b.error(5).data());
        }
    }

    @Test
    void unencodableDataIsAnErrorNamingThePath() throws Exception {
        Plugin p = Plugin.builder(t -> Map.of("readings", List.of(1, new Object()))).build();
        try (TestBridge b = new TestBridge(p)) {
            b.hello();
            b.task(1, "{}");
            Message.Error e = b.error(1);
            assertTrue(e.message().contains("cannot be sent") && e.message().contains("$.readings[1]"), e.message());
        }
    }

    @Test
    void aResultOverTheFrameLimitIsAnsweredWithAnErrorAtOnce() throws Exception {
        Plugin p = Plugin.builder(t -> Map.of("big", "x".repeat(5000))).build();
        try (TestBridge b = new TestBridge(p)) {
            b.hello(Protocol.MIN_MAX_FRAME);
            b.task(1, "{}");
            Message.Error e = b.error(1);
            assertTrue(e.message().startsWith("result too large: "), e.message());
            assertTrue(e.message().contains("the limit is 1024 (hello.max_frame)"), e.message());
        }
    }

    @Test
    void aFrameOverTheAnnouncedLimitFromTheBridgeIsAProtocolError() throws Exception {
        String err = captureStderr(() -> {
            try (TestBridge b = new TestBridge(echo().build())) {
                b.hello(Protocol.MIN_MAX_FRAME);
                b.task(1, "{\"pad\": \"" + "x".repeat(2000) + "\"}");
                assertEquals(1, b.exitStatus());
            }
        });
        assertTrue(err.contains("frame_too_large"), err);
    }

    @Test
    void cancelInterruptsTheHandlerWhichAnswersCancelled() throws Exception {
        CountDownLatch started = new CountDownLatch(1);
        AtomicReference<String> reason = new AtomicReference<>();
        Plugin p = Plugin.builder(t -> {
            started.countDown();
            try {
                Thread.sleep(60_000);
            } finally {
                reason.set(t.cancelReason());
            }
            return Map.of();
        }).build();
        try (TestBridge b = new TestBridge(p)) {
            b.hello();
            b.task(1, "{}");
            assertTrue(started.await(5, TimeUnit.SECONDS));
            b.send(new Message.Cancel(1, "timeout"));
            Message.Error e = b.error(1);
            assertEquals("cancelled", e.message());
            assertEquals("cancelled by the bridge: timeout", e.detail());
            assertEquals("timeout", reason.get());
        }
    }

    @Test
    void cancelCancelsAReturnedFutureAndRunsCallbacks() throws Exception {
        AtomicBoolean callback = new AtomicBoolean();
        Plugin p = Plugin.builder(t -> {
            t.onCancel(() -> callback.set(true));
            return new CompletableFuture<Object>();
        }).build();
        try (TestBridge b = new TestBridge(p)) {
            b.hello();
            b.task(1, "{}");
            b.task(2, "{}");
            b.send(new Message.Cancel(1, "shutdown"));
            assertEquals("cancelled", b.error(1).message());
            assertTrue(callback.get());
            b.send(new Message.Cancel(2, "timeout"));
            assertEquals("cancelled", b.error(2).message());
        }
    }

    @Test
    void aCancelForAnAnsweredOrUnknownIdIsIgnored() throws Exception {
        try (TestBridge b = new TestBridge(echo().build())) {
            b.hello();
            b.task(1, "{\"i\": 1}");
            b.resultData(1);
            b.send(new Message.Cancel(1, "timeout"));
            b.send(new Message.Cancel(77, "timeout"));
            b.task(2, "{\"i\": 2}");
            TestBridge.assertData(Map.of("i", 2), b.resultData(2));
            b.closeInput();
            assertEquals(0, b.exitStatus());
            b.drain();
            assertEquals(2, b.answers.size());
        }
    }

    @Test
    void anIdMayBeReusedOnceAnswered() throws Exception {
        try (TestBridge b = new TestBridge(echo().build())) {
            b.hello();
            for (int round = 0; round < 200; round++) {
                b.task(5, "{\"i\": " + round + "}");
                TestBridge.assertData(Map.of("i", round), b.resultData(5));
                b.answers.clear();
            }
        }
    }

    @Test
    void stopFinishesTheWorkInFlightThenRunsTheStopHook() throws Exception {
        List<String> events = Collections.synchronizedList(new ArrayList<>());
        Plugin p = Plugin.builder(t -> {
            Thread.sleep(200);
            events.add("answered " + t.id());
            return Map.of();
        }).onStart(() -> events.add("start")).onStop(() -> events.add("stop")).build();
        for (boolean viaStop : new boolean[] {true, false}) {
            events.clear();
            try (TestBridge b = new TestBridge(p)) {
                b.hello();
                b.task(1, "{}");
                if (viaStop) {
                    b.send(new Message.Stop());
                } else {
                    b.closeInput();
                }
                assertEquals(0, b.exitStatus());
                b.drain();
                assertTrue(b.answers.get(1L) instanceof Message.Result);
                assertEquals(List.of("start", "answered 1", "stop"), events);
            }
        }
    }

    @Test
    void stateChangesReachTheHookInOrder() throws Exception {
        List<Boolean> seen = Collections.synchronizedList(new ArrayList<>());
        Plugin p = echo().onConnectionStateChanged(seen::add).build();
        try (TestBridge b = new TestBridge(p)) {
            b.hello();
            b.send(new Message.State(true));
            b.send(new Message.State(false));
            b.send(new Message.State(true));
            b.closeInput();
            assertEquals(0, b.exitStatus());
            assertEquals(List.of(true, false, true), seen);
        }
    }

    @Test
    void debugRequestsNeedADebugHandler() throws Exception {
        try (TestBridge b = new TestBridge(echo().build())) {
            b.hello();
            b.task(1, "{}".getBytes(StandardCharsets.UTF_8), true);
            assertEquals("this handler takes no debug requests", b.error(1).message());
        }
        try (TestBridge b = new TestBridge(echo().debug(t -> Map.of("debug", t.isDebug())).build())) {
            b.hello();
            b.task(1, "{}".getBytes(StandardCharsets.UTF_8), true);
            TestBridge.assertData(Map.of("debug", true), b.resultData(1));
        }
    }

    @Test
    void slf4jRecordsInsideATaskAreLogFramesWithItsIdBeforeTheAnswer() throws Exception {
        Plugin p = Plugin.builder(t -> {
            LoggerFactory.getLogger("handler").info("reading {} of {}", 1, 2);
            LoggerFactory.getLogger("handler").debug("not shown at INFO");
            t.log().warn("low battery");
            CompletableFuture.runAsync(() -> t.log().error("from another thread")).join();
            return Map.of();
        }).build();
        try (TestBridge b = new TestBridge(p)) {
            b.hello();
            b.task(7, "{}");
            b.answer(7);
            assertEquals(3, b.logs.size(), b.logs.toString());
            assertEquals("reading 1 of 2", b.logs.get(0).msg());
            assertEquals(LogLevel.INFO, b.logs.get(0).level());
            assertEquals(LogLevel.WARNING, b.logs.get(1).level());
            assertEquals(LogLevel.ERROR, b.logs.get(2).level());
            for (Message.Log l : b.logs) {
                assertEquals(7L, l.id());
                assertTrue(l.time().matches("\\d{4}-\\d\\d-\\d\\dT\\d\\d:\\d\\d:\\d\\d\\.\\d{3}Z"), l.time());
            }
        }
    }

    @Test
    void recordsOutsideATaskHaveNoIdAndTheLevelIsConfigurable() throws Exception {
        Plugin p = echo().logLevel(Level.DEBUG).onStart(() -> LoggerFactory.getLogger("x").info("before ready"))
                .build();
        String err = captureStderr(() -> {
            try (TestBridge b = new TestBridge(p)) {
                b.hello();
                LoggerFactory.getLogger("plugin").debug("hello from outside");
                Message m = b.next();
                assertTrue(m instanceof Message.Log, String.valueOf(m));
                assertNull(((Message.Log) m).id());
                assertEquals(LogLevel.DEBUG, ((Message.Log) m).level());
            }
        });
        assertTrue(err.contains("info before ready"), err); // SPEC 2.3: no log frame before ready
    }

    @Test
    void theBridgeBreakingTheProtocolEndsTheProcessNonZero() throws Exception {
        String err = captureStderr(() -> {
            try (TestBridge b = new TestBridge(echo().build())) {
                b.hello();
                b.sendRaw("hello world\n".getBytes(StandardCharsets.US_ASCII));
                assertEquals(1, b.exitStatus());
            }
            try (TestBridge b = new TestBridge(echo().build())) {
                b.hello();
                b.send(new Message.Result(1, Map.of(), "", ""));
                assertEquals(1, b.exitStatus());
            }
            try (TestBridge b = new TestBridge(Plugin.builder(t -> {
                Thread.sleep(60_000);
                return null;
            }).build())) {
                b.hello();
                b.task(1, "{}");
                b.task(1, "{}");
                assertEquals(1, b.exitStatus());
            }
        });
        assertTrue(err.contains("frame_too_large"), err);
        assertTrue(err.contains("(unexpected): a result message is never sent by the bridge"), err);
        assertTrue(err.contains("(duplicate_id): a task with id 1, which is already in flight"), err);
    }

    /**
     * Every sequence that ends in a bridge error, played at a real child: it names the kind on
     * stderr and exits 1. Requests sleep, so that their ids stay in flight. A child may stop
     * reading at stop (SPEC 4), and this one does: what follows a stop never reaches it, and
     * it exits 0 once its requests are answered.
     */
    @TestFactory
    Stream<DynamicTest> bridgeErrorsOfTheSequencesEndTheChild() throws Exception {
        return SequencesTest.sequences().stream().filter(seq -> {
            Map<String, Object> last = steps(seq).get(steps(seq).size() - 1);
            return last.get("error") != null && "bridge".equals(last.get("from"));
        }).map(seq -> DynamicTest.dynamicTest((String) seq.get("name"), () -> {
            List<Map<String, Object>> steps = steps(seq);
            // What this child sees: the bridge's frames, with its own ready sent right after
            // hello (so frames the bridge sent before reading ready look in turn to it), and
            // nothing after stop, where it stops reading.
            Connection seen = new Connection(Schema.Role.CHILD);
            String expected = null;
            for (Map<String, Object> step : steps) {
                if (!"bridge".equals(step.get("from"))) {
                    continue;
                }
                Message m = SequencesTest.decode(step);
                try {
                    seen.receive(m);
                } catch (ProtocolException e) {
                    expected = e.kind().wireName();
                    break;
                }
                if (m instanceof Message.Hello) {
                    seen.send(new Message.Ready(1, 64, true, "", "", null));
                } else if (m instanceof Message.Stop) {
                    break;
                }
            }
            Plugin p = Plugin.builder(t -> {
                Thread.sleep(300);
                return Map.of();
            }).debug(t -> Map.of()).build();
            AtomicReference<Integer> status = new AtomicReference<>();
            String err = captureStderr(() -> {
                try (TestBridge b = new TestBridge(p)) {
                    for (Map<String, Object> step : steps) {
                        if ("bridge".equals(step.get("from"))) {
                            b.sendRaw(HexFormat.of().parseHex((String) step.get("hex")));
                        }
                    }
                    b.closeInput();
                    status.set(b.exitStatus());
                }
            });
            if (expected == null) {
                assertEquals(0, status.get(), err);
            } else {
                assertEquals(1, status.get(), err);
                assertTrue(err.contains("(" + expected + ")"), err);
            }
        }));
    }

    @SuppressWarnings("unchecked")
    private static List<Map<String, Object>> steps(Map<String, Object> seq) {
        return (List<Map<String, Object>>) seq.get("steps");
    }

    /** Runs body with System.err captured; returns what it printed. */
    static String captureStderr(ThrowingRunnable body) throws Exception {
        PrintStream old = System.err;
        ByteArrayOutputStream buf = new ByteArrayOutputStream();
        System.setErr(new PrintStream(buf, true, StandardCharsets.UTF_8));
        try {
            body.run();
        } finally {
            System.setErr(old);
        }
        return buf.toString(StandardCharsets.UTF_8);
    }

    interface ThrowingRunnable {
        void run() throws Exception;
    }
}
