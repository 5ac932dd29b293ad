package io.flowbridge.adapter;

import io.flowbridge.adapter.protocol.Connection;
import io.flowbridge.adapter.protocol.FrameDecoder;
import io.flowbridge.adapter.protocol.LogLevel;
import io.flowbridge.adapter.protocol.Message;
import io.flowbridge.adapter.protocol.MessageCodec;
import io.flowbridge.adapter.protocol.Protocol;
import io.flowbridge.adapter.protocol.ProtocolException;
import io.flowbridge.adapter.protocol.Schema;
import io.flowbridge.adapter.protocol.UnencodableValueException;
import java.io.IOException;
import java.io.InputStream;
import java.io.InterruptedIOException;
import java.io.OutputStream;
import java.io.PrintWriter;
import java.io.StringWriter;
import java.nio.channels.ClosedByInterruptException;
import java.nio.charset.StandardCharsets;
import java.time.Instant;
import java.time.ZoneOffset;
import java.time.format.DateTimeFormatter;
import java.util.ArrayDeque;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.concurrent.CancellationException;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.CompletionException;
import java.util.concurrent.CompletionStage;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.TimeUnit;
import org.slf4j.event.Level;

/**
 * One conversation with the bridge, from hello to exit (SPEC.md section 2).
 *
 * <p>Theory of operation. The thread that calls {@link #run()} is the reader: it reads
 * hello, runs the start hook, answers ready, then turns frames into work until stop or
 * end of input. Each request runs on a worker (a virtual thread, or a pooled one) that
 * calls the handler, encodes the one answer and hands it to the {@link Outbox}, the only
 * writer. A request leaves the in-flight map before its answer is queued, so that the
 * bridge may reuse its id as soon as it reads the answer. At the end the reader waits for
 * the requests in flight, flushes their answers, runs the stop hook and returns 0.
 */
final class Session {
    /** The session whose logs SLF4J records go to; one per process outside tests. */
    static volatile Session current;

    static final String ADAPTER_VERSION = "flow-bridge-java 0.1.0";

    /** Bytes read from stdin at a time: a whole batch of small frames in one read. */
    private static final int READ_BYTES = 64 * 1024;

    /** Room left in a log frame for everything but the text, so that a long log still fits. */
    private static final int LOG_OVERHEAD = 256;

    private static final DateTimeFormatter RFC3339_MS =
            DateTimeFormatter.ofPattern("yyyy-MM-dd'T'HH:mm:ss.SSS'Z'").withZone(ZoneOffset.UTC);

    private final Plugin plugin;
    private final InputStream in;
    private final OutputStream out;
    private final FrameDecoder decoder = new FrameDecoder();
    /** The rules of who sends what when, and the ids in flight as the protocol sees them. */
    private final Connection conn = new Connection(Schema.Role.CHILD);
    private final ArrayDeque<Message> pendingMessages = new ArrayDeque<>();
    private final byte[] readBuf = new byte[READ_BYTES];

    private final Map<Long, Request> inflight = new ConcurrentHashMap<>();
    private final Object drainLock = new Object();
    private int running; // requests not yet answered; guarded by drainLock

    private volatile boolean ready;
    private volatile int maxFrame = Protocol.DEFAULT_MAX_FRAME;
    private Outbox outbox;
    private Workers.Runner workers;
    private ExecutorService stateThread;

    Session(Plugin plugin, InputStream in, OutputStream out) {
        this.plugin = plugin;
        this.in = in;
        this.out = out;
    }

    Level logLevel() {
        return plugin.logLevel;
    }

    /** Serves until stop or end of input; returns the exit status. */
    int run() {
        // 1. hello. Nothing may be written before it has been read.
        Message first;
        try {
            first = next();
        } catch (ProtocolException e) {
            return bridgeBroke(e);
        }
        if (first == null) {
            return 0; // the bridge went away before saying anything
        }
        try {
            conn.receive(first); // anything but hello is unexpected here
        } catch (ProtocolException e) {
            return bridgeBroke(e);
        }
        Message.Hello hello = (Message.Hello) first;
        if (!hello.protocols().contains((long) Protocol.VERSION)) {
            long newest = hello.protocols().stream().mapToLong(Long::longValue).max().orElse(0);
            String advice = newest > Protocol.VERSION
                    ? "upgrade the flow-bridge Java adapter (io.flowbridge:flow-bridge-adapter)"
                    : "upgrade flow-bridge";
            System.err.println("flow-bridge adapter speaks protocol [" + Protocol.VERSION + "], the bridge offers "
                    + hello.protocols() + ": " + advice);
            return 1;
        }
        maxFrame = hello.maxFrame();
        decoder.setMaxFrame(hello.maxFrame());

        // 2. Start hook, then ready.
        if (plugin.onStart != null) {
            try {
                plugin.onStart.run();
            } catch (Throwable e) {
                System.err.println("flow-bridge adapter: the start hook failed: " + e);
                e.printStackTrace();
                return 1;
            }
        }
        workers = Workers.create(plugin.concurrency, plugin.virtualThreads);
        if (plugin.onState != null) {
            stateThread = Executors.newSingleThreadExecutor(r -> {
                Thread t = new Thread(r, "flow-bridge-state");
                t.setDaemon(true);
                return t;
            });
        }
        outbox = new Outbox(out);
        String version = plugin.version.isEmpty() ? ADAPTER_VERSION : plugin.version;
        // Queued before `ready` turns true, so a log frame from another thread comes after it.
        Message.Ready readyMessage = new Message.Ready(Protocol.VERSION, plugin.concurrency,
                plugin.debug != null, plugin.name, version, plugin.pluginType);
        try {
            conn.send(readyMessage);
        } catch (ProtocolException e) {
            throw new IllegalStateException("the adapter broke the protocol: " + e.getMessage(), e);
        }
        outbox.enqueue(MessageCodec.encode(readyMessage));
        ready = true;
        outbox.flush();

        // 3. Requests, until stop or end of input.
        try {
            readLoop();
        } catch (ProtocolException e) {
            for (Request t : inflight.values()) {
                t.cancel("shutdown");
            }
            outbox.close();
            return bridgeBroke(e);
        }

        // 4. Finish what is in flight, answer it, run the stop hook.
        awaitDrained();
        if (stateThread != null) {
            stateThread.shutdown();
            awaitQuietly(stateThread);
        }
        outbox.flush();
        if (plugin.onStop != null) {
            try {
                plugin.onStop.run();
            } catch (Throwable e) {
                System.err.println("flow-bridge adapter: the stop hook failed: " + e);
                e.printStackTrace();
            }
        }
        ready = false;
        outbox.close();
        workers.shutdown();
        return 0;
    }

    private static int bridgeBroke(ProtocolException e) {
        System.err.println("flow-bridge adapter: the bridge broke the stdio protocol: " + e.getMessage());
        return 1;
    }

    /** The next message, or null at end of input (or when stdin fails: the bridge is gone). */
    private Message next() throws ProtocolException {
        while (pendingMessages.isEmpty()) {
            int n;
            try {
                n = in.read(readBuf);
            } catch (IOException e) {
                System.err.println("flow-bridge adapter: reading from the bridge: " + e.getMessage() + "; stopping");
                n = -1;
            }
            if (n < 0) {
                decoder.end();
                return null;
            }
            List<Message> got = new ArrayList<>();
            decoder.receive(readBuf, 0, n, got);
            pendingMessages.addAll(got);
        }
        return pendingMessages.poll();
    }

    private void readLoop() throws ProtocolException {
        while (true) {
            Message m = next();
            if (m == null) {
                return;
            }
            conn.receive(m); // the wrong direction, out of turn or an id in flight: the bridge's error
            if (m instanceof Message.Stop) {
                return; // SPEC 4: a child may stop reading at stop
            }
            if (m instanceof Message.Request r) {
                dispatch(r);
            } else if (m instanceof Message.Cancel c) {
                Request t = inflight.get(c.id());
                if (t != null) { // a cancel for an id already answered is ignored (SPEC 2.4)
                    t.cancel(c.reason());
                }
            } else if (m instanceof Message.State s) {
                if (stateThread != null) {
                    stateThread.execute(() -> callStateHook(s.connected()));
                }
            }
        }
    }

    private void callStateHook(boolean connected) {
        try {
            plugin.onState.onConnectionStateChanged(connected);
        } catch (Throwable e) {
            System.err.println("flow-bridge adapter: onConnectionStateChanged failed: " + e);
            e.printStackTrace();
        }
    }

    private void dispatch(Message.Request r) throws ProtocolException {
        Request t = new Request(r, this);
        inflight.put(r.id(), t); // the connection has refused an id already in flight
        synchronized (drainLock) {
            running++;
        }
        Handler h = r.debug() ? plugin.debug : plugin.execute;
        if (h == null) {
            finish(t, null, new HandlerException("this handler takes no debug requests"));
            return;
        }
        workers.execute(() -> runHandler(t, h));
    }

    private void runHandler(Request t, Handler h) {
        Object value = null;
        Throwable failure = null;
        Request.CURRENT.set(t);
        t.bind(Thread.currentThread());
        try {
            value = h.handle(t);
        } catch (Throwable e) {
            failure = e;
        } finally {
            t.unbind();
            Request.CURRENT.remove();
        }
        if (failure == null && value instanceof CompletionStage<?> stage) {
            CompletableFuture<?> f = stage.toCompletableFuture();
            t.attach(f);
            f.whenComplete((v, e) -> finish(t, v, e));
            return;
        }
        finish(t, value, failure);
    }

    /** Writes the one answer of {@code t}. */
    private void finish(Request t, Object value, Throwable failure) {
        if (!t.markAnswered()) {
            return;
        }
        Encoded answer = failure == null ? resultFrame(t.id(), value) : errorFrame(t, failure);
        inflight.remove(t.id());
        try {
            conn.send(answer.message()); // the id leaves flight
            outbox.send(answer.frame());
        } catch (ProtocolException e) {
            System.err.println("flow-bridge adapter: an answer was not sent: " + e.getMessage());
        }
        synchronized (drainLock) {
            if (--running == 0) {
                drainLock.notifyAll();
            }
        }
    }

    /** An answer and its frame, encoded once. */
    private record Encoded(Message message, byte[] frame) {}

    private Encoded resultFrame(long id, Object value) {
        Reply r = value instanceof Reply res ? res : Reply.of(value);
        // null means an empty map, as in the vendor's Go SDK; Json.NULL is JSON null.
        Object data = r.data() == null ? Map.of() : r.data();
        Message.Result result = new Message.Result(id, data, r.message(), r.detail());
        byte[] frame;
        try {
            frame = MessageCodec.encode(result);
        } catch (UnencodableValueException e) {
            return errorFrame(id, "the handler's result cannot be sent: " + e.getMessage(), "");
        } catch (RuntimeException | StackOverflowError e) {
            return errorFrame(id, "the handler's result cannot be sent: " + e, stackTrace(e));
        }
        int body = frame.length - Protocol.HEADER_BYTES;
        if (body > maxFrame) {
            // SPEC 4: never send a frame over the limit; answer the id with an error at once.
            return errorFrame(id, "result too large: " + body + " bytes, the limit is " + maxFrame
                    + " (hello.max_frame); return less data", "");
        }
        return new Encoded(result, frame);
    }

    private Encoded errorFrame(Request t, Throwable e) {
        Throwable cause = unwrap(e);
        String reason = t.cancelReason();
        if (reason != null && isCancellation(cause)) {
            return errorFrame(t.id(), "cancelled", "cancelled by the bridge: " + reason);
        }
        if (cause instanceof HandlerException he) {
            return he.data() == null ? errorFrame(t.id(), he.getMessage(), he.detail())
                    : errorFrameWithData(t.id(), he.getMessage(), he.detail(), he.data());
        }
        String message = cause.getMessage();
        if (message == null || message.isEmpty()) {
            message = cause.getClass().getName();
        }
        return errorFrame(t.id(), message, stackTrace(cause));
    }

    private static Throwable unwrap(Throwable e) {
        while ((e instanceof CompletionException || e instanceof ExecutionException) && e.getCause() != null) {
            e = e.getCause();
        }
        return e;
    }

    private static boolean isCancellation(Throwable e) {
        for (Throwable c = e; c != null; c = c.getCause()) {
            if (c instanceof InterruptedException || c instanceof CancellationException
                    || c instanceof InterruptedIOException || c instanceof ClosedByInterruptException
                    || c instanceof Request.CancelledException) {
                return true;
            }
        }
        return false;
    }

    private Encoded errorFrame(long id, String message, String detail) {
        Message.Error error = new Message.Error(id, message, detail, null);
        byte[] frame = MessageCodec.encode(error);
        if (frame.length - Protocol.HEADER_BYTES > maxFrame) {
            // Even the error must fit: keep the start of each text.
            error = new Message.Error(id, truncate(message, maxFrame / 4), truncate(detail, maxFrame / 2), null);
            frame = MessageCodec.encode(error);
        }
        return new Encoded(error, frame);
    }

    /** An error carrying data; without it, saying why, when the data cannot go. */
    private Encoded errorFrameWithData(long id, String message, String detail, Object data) {
        String why;
        try {
            Message.Error error = new Message.Error(id, message, detail, data);
            byte[] frame = MessageCodec.encode(error);
            int body = frame.length - Protocol.HEADER_BYTES;
            if (body <= maxFrame) {
                return new Encoded(error, frame);
            }
            why = "the error frame is " + body + " bytes with it, the limit is " + maxFrame + " (hello.max_frame)";
        } catch (RuntimeException | StackOverflowError e) {
            why = e.getMessage() != null ? e.getMessage() : e.toString();
        }
        String note = "[flow-bridge: the error's data was left out: " + why + "]";
        return errorFrame(id, message, detail.isEmpty() ? note : detail + "\n" + note);
    }

    static String stackTrace(Throwable e) {
        StringWriter w = new StringWriter();
        e.printStackTrace(new PrintWriter(w));
        return w.toString();
    }

    /** {@code s} cut to at most {@code maxBytes} UTF-8 bytes, marked when cut. */
    static String truncate(String s, int maxBytes) {
        if (s.length() * 3L <= maxBytes) {
            return s; // fits whatever its characters are
        }
        byte[] b = s.getBytes(StandardCharsets.UTF_8);
        if (b.length <= maxBytes) {
            return s;
        }
        int n = Math.max(0, maxBytes - 16);
        while (n > 0 && (b[n] & 0xc0) == 0x80) {
            n--; // not inside a character
        }
        return new String(b, 0, n, StandardCharsets.UTF_8) + " [truncated]";
    }

    private void awaitDrained() {
        boolean interrupted = false;
        synchronized (drainLock) {
            while (running > 0) {
                try {
                    drainLock.wait();
                } catch (InterruptedException e) {
                    interrupted = true;
                }
            }
        }
        if (interrupted) {
            Thread.currentThread().interrupt();
        }
    }

    private static void awaitQuietly(ExecutorService ex) {
        try {
            while (!ex.awaitTermination(1, TimeUnit.MINUTES)) {
                System.err.println("flow-bridge adapter: still waiting for onConnectionStateChanged to return");
            }
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
        }
    }

    // -- logs -------------------------------------------------------------------------------

    /** Writes one log record: a frame once ready, else a stderr line (SPEC 2.3). */
    void log(LogLevel level, String msg, Request task, Instant when) {
        if (!ready) {
            System.err.println(level.wireName() + " " + msg);
            return;
        }
        Long id = task != null && !task.answered() ? task.id() : null;
        String text = truncate(msg, maxFrame - LOG_OVERHEAD);
        Message.Log log = new Message.Log(level, text, id, RFC3339_MS.format(when));
        try {
            conn.send(log);
        } catch (ProtocolException e) {
            System.err.println(level.wireName() + " " + msg); // after the end: stderr still reaches the log
            return;
        }
        outbox.send(MessageCodec.encode(log));
    }
}
