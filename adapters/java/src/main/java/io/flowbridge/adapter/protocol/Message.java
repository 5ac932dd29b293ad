package io.flowbridge.adapter.protocol;

import java.util.Arrays;
import java.util.List;
import java.util.Objects;

/**
 * The messages of the stdio protocol, version 1 (SPEC.md section 3): one record per
 * type, validated where it is built, the same classes for both directions. Optional
 * fields hold the value a receiver assumes when they are missing.
 */
public sealed interface Message {

    /** The message's type, with its row of the schema. */
    Schema.MsgType msgType();

    /** The message's {@code type} on the wire. */
    default String type() {
        return msgType().wireName();
    }

    /** bridge -> child: the first frame. */
    record Hello(List<Long> protocols, String plugin, PluginType pluginType, int maxFrame, String bridge)
            implements Message {
        public Hello {
            protocols = List.copyOf(protocols);
            if (protocols.isEmpty()) {
                throw new IllegalArgumentException("hello.protocols must not be empty");
            }
            Objects.requireNonNull(plugin, "plugin");
            Objects.requireNonNull(pluginType, "pluginType");
            Objects.requireNonNull(bridge, "bridge");
            if (maxFrame < Protocol.MIN_MAX_FRAME || maxFrame > Protocol.MAX_MAX_FRAME) {
                throw new IllegalArgumentException("hello.max_frame out of range: " + maxFrame);
            }
        }

        @Override
        public Schema.MsgType msgType() {
            return Schema.MsgType.HELLO;
        }
    }

    /**
     * child -> bridge: the answer to hello. {@code pluginType} is the type the handler
     * declares, or null when it declares none (the field is then left out).
     */
    record Ready(long protocol, int concurrency, boolean debug, String name, String version, PluginType pluginType)
            implements Message {
        public Ready {
            if (protocol < 1) {
                throw new IllegalArgumentException("ready.protocol must be positive");
            }
            if (concurrency < 1 || concurrency > Protocol.MAX_CONCURRENCY) {
                throw new IllegalArgumentException("ready.concurrency must be in 1.." + Protocol.MAX_CONCURRENCY);
            }
            Objects.requireNonNull(name, "name");
            Objects.requireNonNull(version, "version");
        }

        @Override
        public Schema.MsgType msgType() {
            return Schema.MsgType.READY;
        }
    }

    /**
     * bridge -> child: a task (the engine's FlowRequest) or, when {@code debug} is set,
     * a debug request (DebugRequest, which has no job).
     */
    record Request(boolean debug, long id, byte[] config, String projectId, String flowId, String job,
                   String elementId, String elementJob, long timeoutMs) implements Message {
        public Request {
            checkId(id);
            Objects.requireNonNull(config, "config");
            Objects.requireNonNull(projectId, "projectId");
            Objects.requireNonNull(flowId, "flowId");
            Objects.requireNonNull(job, "job");
            Objects.requireNonNull(elementId, "elementId");
            Objects.requireNonNull(elementJob, "elementJob");
            if (debug && !job.isEmpty()) {
                throw new IllegalArgumentException("a debug request has no job");
            }
            if (timeoutMs < 0) {
                throw new IllegalArgumentException("timeout_ms must not be negative");
            }
        }

        @Override
        public Schema.MsgType msgType() {
            return debug ? Schema.MsgType.DEBUG : Schema.MsgType.TASK;
        }

        @Override
        public boolean equals(Object o) {
            return o instanceof Request r && r.debug == debug && r.id == id && Arrays.equals(r.config, config)
                    && r.projectId.equals(projectId) && r.flowId.equals(flowId) && r.job.equals(job)
                    && r.elementId.equals(elementId) && r.elementJob.equals(elementJob) && r.timeoutMs == timeoutMs;
        }

        @Override
        public int hashCode() {
            return Long.hashCode(id) * 31 + Arrays.hashCode(config);
        }

        @Override
        public String toString() {
            return type() + "[id=" + id + ", config=" + config.length + " bytes, element_job=" + elementJob + "]";
        }
    }

    /** child -> bridge: a success. {@code data} is any value msgpack can carry; see Values. */
    record Result(long id, Object data, String message, String detail) implements Message {
        public Result {
            checkId(id);
            Objects.requireNonNull(message, "message");
            Objects.requireNonNull(detail, "detail");
        }

        @Override
        public Schema.MsgType msgType() {
            return Schema.MsgType.RESULT;
        }
    }

    /**
     * child -> bridge: the handler failed. {@code data} is a value that goes with the
     * failure (for a debug request the bridge shows it as the value); null means none,
     * and the field is left out.
     */
    record Error(long id, String message, String detail, Object data) implements Message {
        public Error {
            checkId(id);
            Objects.requireNonNull(message, "message");
            Objects.requireNonNull(detail, "detail");
        }

        @Override
        public Schema.MsgType msgType() {
            return Schema.MsgType.ERROR;
        }
    }

    /** child -> bridge: a log record; {@code id} is null when it belongs to no request. */
    record Log(LogLevel level, String msg, Long id, String time) implements Message {
        public Log {
            Objects.requireNonNull(level, "level");
            Objects.requireNonNull(msg, "msg");
            Objects.requireNonNull(time, "time");
            if (id != null) {
                checkId(id);
            }
        }

        @Override
        public Schema.MsgType msgType() {
            return Schema.MsgType.LOG;
        }
    }

    /** bridge -> child: give up request {@code id}. */
    record Cancel(long id, String reason) implements Message {
        public Cancel {
            checkId(id);
            Objects.requireNonNull(reason, "reason");
        }

        @Override
        public Schema.MsgType msgType() {
            return Schema.MsgType.CANCEL;
        }
    }

    /** bridge -> child: the bridge's link to the engine went up or down. */
    record State(boolean connected) implements Message {
        @Override
        public Schema.MsgType msgType() {
            return Schema.MsgType.STATE;
        }
    }

    /** bridge -> child: finish the requests in flight and exit. */
    record Stop() implements Message {
        @Override
        public Schema.MsgType msgType() {
            return Schema.MsgType.STOP;
        }
    }

    private static void checkId(long id) {
        if (id < 0 || id > Protocol.MAX_ID) {
            throw new IllegalArgumentException("id must be in 0..2^53-1, got " + id);
        }
    }
}
