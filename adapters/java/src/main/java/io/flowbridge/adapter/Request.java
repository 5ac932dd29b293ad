package io.flowbridge.adapter;

import io.flowbridge.adapter.protocol.Message;
import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.Optional;
import java.util.concurrent.CompletableFuture;
import org.slf4j.Logger;

/**
 * One request from the engine: a task (FlowRequest) or, when {@link #isDebug()}, a debug
 * request (DebugRequest).
 *
 * <p>Cancellation: when the bridge cancels the request (its timeout ran out, or it is
 * shutting down), {@link #isCancelled()} turns true, the thread running the handler is
 * interrupted, a returned CompletableFuture is cancelled, and {@link #onCancel} callbacks
 * run. A handler that then throws InterruptedException (or lets a CancellationException
 * through) is answered with the error {@code cancelled}; one that returns anyway is
 * answered with what it returned.
 */
public final class Request {
    static final ThreadLocal<Request> CURRENT = new ThreadLocal<>();

    private final Message.Request request;
    private final Session session;
    private volatile FrameLogger logger;

    // Guarded by this.
    private String cancelReason;
    private boolean answered;
    private Thread thread;
    private CompletableFuture<?> future;
    private List<Runnable> cancelCallbacks;

    private volatile boolean configParsed;
    private Object config;
    private boolean configIsJson;

    Request(Message.Request request, Session session) {
        this.request = request;
        this.session = session;
    }

    /** The task running on the current thread, if a handler is running on it. */
    public static Optional<Request> current() {
        return Optional.ofNullable(CURRENT.get());
    }

    /** The bridge's id of this request, unique among those in flight. */
    public long id() {
        return request.id();
    }

    /** Whether this is a debug request rather than a task. */
    public boolean isDebug() {
        return request.debug();
    }

    /** The flow node's configuration, the engine's bytes unchanged. Do not modify the array. */
    public byte[] rawConfig() {
        return request.config();
    }

    public String projectId() {
        return request.projectId();
    }

    public String flowId() {
        return request.flowId();
    }

    /** The job; empty for a debug request. */
    public String job() {
        return request.job();
    }

    public String elementId() {
        return request.elementId();
    }

    public String elementJob() {
        return request.elementJob();
    }

    /** The time the bridge allows for this request; {@link Duration#ZERO} means no limit. */
    public Duration timeout() {
        return Duration.ofMillis(request.timeoutMs());
    }

    private void parseConfig() {
        if (configParsed) {
            return;
        }
        synchronized (this) {
            if (!configParsed) {
                try {
                    config = Json.parse(request.config());
                    configIsJson = true;
                } catch (Json.JsonException e) {
                    config = null;
                    configIsJson = false;
                }
                configParsed = true;
            }
        }
    }

    /**
     * The config parsed as JSON: a Map, List, String, Long, Double, Boolean or null. It is
     * null too when the config is not UTF-8 JSON; {@link #configIsJson()} tells the two apart.
     */
    public Object config() {
        parseConfig();
        return config;
    }

    /** Whether the config bytes are UTF-8 JSON. */
    public boolean configIsJson() {
        parseConfig();
        return configIsJson;
    }

    /** The config when it is a JSON object, otherwise null. */
    @SuppressWarnings("unchecked")
    public Map<String, Object> configMap() {
        return config() instanceof Map<?, ?> m ? (Map<String, Object>) m : null;
    }

    /** The config as text; invalid UTF-8 becomes U+FFFD. */
    public String configText() {
        return new String(request.config(), StandardCharsets.UTF_8);
    }

    /**
     * The JSON config bound to a record type, member by member (see the README). A config
     * that is not a JSON object, or whose members do not fit, fails with a
     * {@link HandlerException} naming the path, so a handler can simply let it through.
     */
    public <T> T configAs(Class<T> type) throws HandlerException {
        if (!configIsJson()) {
            throw new HandlerException("invalid config: the config is not UTF-8 JSON");
        }
        return ConfigBinding.bind(config(), type);
    }

    /**
     * An SLF4J logger whose records become log frames tied to this request, from any
     * thread. Inside the handler's own thread every SLF4J logger does the same.
     */
    public Logger log() {
        FrameLogger l = logger;
        if (l == null) {
            logger = l = new FrameLogger("task", this); // made on first use: most tasks never ask
        }
        return l;
    }

    /** Whether the bridge has cancelled this request. */
    public synchronized boolean isCancelled() {
        return cancelReason != null;
    }

    /** Why the bridge cancelled the request ({@code timeout} or {@code shutdown}), or null. */
    public synchronized String cancelReason() {
        return cancelReason;
    }

    /** Throws {@link CancelledException} once the bridge has cancelled the request. */
    public void throwIfCancelled() throws CancelledException {
        String reason = cancelReason();
        if (reason != null) {
            throw new CancelledException(reason);
        }
    }

    /**
     * Runs {@code callback} when the bridge cancels the request (at once if it already
     * has), for work that interruption does not reach: a socket to close, a remote call.
     */
    public void onCancel(Runnable callback) {
        synchronized (this) {
            if (cancelReason == null) {
                if (cancelCallbacks == null) {
                    cancelCallbacks = new ArrayList<>(1);
                }
                cancelCallbacks.add(callback);
                return;
            }
        }
        runCallback(callback);
    }

    /** Thrown by {@link #throwIfCancelled()}; answered as the error {@code cancelled}. */
    public static final class CancelledException extends HandlerException {
        private static final long serialVersionUID = 1L;

        CancelledException(String reason) {
            super("cancelled", "cancelled by the bridge: " + reason);
        }
    }

    // -- for the session --------------------------------------------------------------------

    Session session() {
        return session;
    }

    synchronized void bind(Thread t) {
        thread = t;
    }

    /** Leaves the handler's thread; clears an interrupt that a cancel left on it. */
    void unbind() {
        synchronized (this) {
            thread = null;
        }
        // Any interrupt from cancel() came while the thread was bound; none can come now.
        Thread.interrupted();
    }

    /** The future a handler returned; cancelled at once if the request already is. */
    void attach(CompletableFuture<?> f) {
        boolean cancelNow;
        synchronized (this) {
            future = f;
            cancelNow = cancelReason != null;
        }
        if (cancelNow) {
            f.cancel(true);
        }
    }

    void cancel(String reason) {
        List<Runnable> callbacks;
        CompletableFuture<?> f;
        synchronized (this) {
            if (answered || cancelReason != null) {
                return;
            }
            cancelReason = reason;
            if (thread != null) {
                thread.interrupt();
            }
            f = future;
            callbacks = cancelCallbacks;
            cancelCallbacks = null;
        }
        // Callbacks first: by the time a cancelled future has been answered, they have run.
        if (callbacks != null) {
            callbacks.forEach(Request::runCallback);
        }
        if (f != null) {
            f.cancel(true);
        }
    }

    /** Marks the request answered; false when it already was. */
    synchronized boolean markAnswered() {
        if (answered) {
            return false;
        }
        answered = true;
        return true;
    }

    synchronized boolean answered() {
        return answered;
    }

    private static void runCallback(Runnable r) {
        try {
            r.run();
        } catch (RuntimeException e) {
            System.err.println("flow-bridge adapter: an onCancel callback failed: " + e);
        }
    }
}
