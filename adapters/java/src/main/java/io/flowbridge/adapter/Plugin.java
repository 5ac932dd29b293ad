package io.flowbridge.adapter;

import io.flowbridge.adapter.protocol.PluginType;
import io.flowbridge.adapter.protocol.Protocol;
import java.util.Objects;
import org.slf4j.event.Level;

/**
 * A handler and its hooks, as the bridge sees them. Only the execute handler is required:
 *
 * <pre>{@code
 * Plugin.builder(request -> Map.of("doubled", 2 * request.configAs(Config.class).x()))
 *     .name("doubler")
 *     .onStop(pool::shutdown)
 *     .build()
 *     .run();
 * }</pre>
 */
public final class Plugin {
    /** The concurrency announced when none is set: requests the bridge may have in flight at once. */
    public static final int DEFAULT_CONCURRENCY = 64;

    final Handler execute;
    final Handler debug;
    final Hook onStart;
    final Hook onStop;
    final StateListener onState;
    final int concurrency;
    final String name;
    final String version;
    final PluginType pluginType;
    final Level logLevel;
    final boolean virtualThreads;

    private Plugin(Builder b) {
        execute = b.execute;
        debug = b.debug;
        onStart = b.onStart;
        onStop = b.onStop;
        onState = b.onState;
        concurrency = b.concurrency;
        name = b.name;
        version = b.version;
        pluginType = b.pluginType;
        logLevel = b.logLevel;
        virtualThreads = b.virtualThreads;
    }

    /** A builder for a plugin whose tasks {@code execute} handles. */
    public static Builder builder(Handler execute) {
        return new Builder(execute);
    }

    /**
     * Serves the bridge on this process's stdin and stdout until {@code stop} or end of
     * input, then exits: status 0 after a clean end, non-zero when the plugin could not
     * start or the bridge broke the protocol. See {@link FlowBridge#run(Plugin)}.
     */
    public void run() {
        FlowBridge.run(this);
    }

    public static final class Builder {
        private final Handler execute;
        private Handler debug;
        private Hook onStart;
        private Hook onStop;
        private StateListener onState;
        private int concurrency = DEFAULT_CONCURRENCY;
        private String name = "";
        private String version = "";
        private PluginType pluginType;
        private Level logLevel = Level.INFO;
        private boolean virtualThreads = true;

        private Builder(Handler execute) {
            this.execute = Objects.requireNonNull(execute, "execute");
        }

        /**
         * Handles debug requests (the engine's DebugRequest; {@link Request#isDebug()} is set).
         * Without one the child tells the bridge it takes none. Pass the execute handler
         * again to treat both alike.
         */
        public Builder debug(Handler debug) {
            this.debug = debug;
            return this;
        }

        /** Runs after the bridge's hello, before the first request; throwing ends the process. */
        public Builder onStart(Hook hook) {
            this.onStart = hook;
            return this;
        }

        /** Runs once at the end, after every request in flight was answered. */
        public Builder onStop(Hook hook) {
            this.onStop = hook;
            return this;
        }

        /** Told when the bridge's engine link goes up or down; calls come in order, on one thread. */
        public Builder onConnectionStateChanged(StateListener listener) {
            this.onState = listener;
            return this;
        }

        /** Requests in flight at once, 1..65536 (default 64). */
        public Builder concurrency(int concurrency) {
            if (concurrency < 1 || concurrency > Protocol.MAX_CONCURRENCY) {
                throw new IllegalArgumentException("concurrency must be in 1.." + Protocol.MAX_CONCURRENCY
                        + ", got " + concurrency);
            }
            this.concurrency = concurrency;
            return this;
        }

        /**
         * The plugin's name: the bridge registers with the engine under it when its own
         * settings name none, and shows it in its logs.
         */
        public Builder name(String name) {
            this.name = Objects.requireNonNull(name, "name");
            return this;
        }

        /** The handler's version, shown in the bridge's logs (default: the adapter's). */
        public Builder version(String version) {
            this.version = Objects.requireNonNull(version, "version");
            return this;
        }

        /**
         * The plugin type the handler declares ({@code SERVICE} or {@code USER}), used when
         * the bridge's settings name none. Unset, it declares none.
         */
        public Builder pluginType(PluginType type) {
            this.pluginType = type;
            return this;
        }

        /** The least severe SLF4J level that becomes a log frame (default INFO). */
        public Builder logLevel(Level level) {
            this.logLevel = Objects.requireNonNull(level, "level");
            return this;
        }

        /**
         * Whether requests run on virtual threads when the runtime has them (Java 21+;
         * default true). Otherwise, and on Java 17, a pool of at most {@code concurrency}
         * platform threads runs them.
         */
        public Builder virtualThreads(boolean use) {
            this.virtualThreads = use;
            return this;
        }

        public Plugin build() {
            return new Plugin(this);
        }
    }
}
