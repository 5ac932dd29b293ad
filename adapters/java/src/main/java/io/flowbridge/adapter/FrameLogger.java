package io.flowbridge.adapter;

import io.flowbridge.adapter.protocol.LogLevel;
import java.time.Instant;
import org.slf4j.Marker;
import org.slf4j.event.Level;
import org.slf4j.helpers.LegacyAbstractLogger;
import org.slf4j.helpers.MessageFormatter;

/**
 * An SLF4J logger whose records become log frames. Records made on a thread that runs a
 * handler carry that request's id; a task's own logger ({@link Request#log()}) carries its id
 * from any thread. Before ready, and outside a session, records go to stderr as lines.
 */
final class FrameLogger extends LegacyAbstractLogger {
    private static final long serialVersionUID = 1L;

    /** The task this logger is tied to, or null to use the current thread's. */
    private final transient Request task;

    FrameLogger(String name, Request task) {
        this.name = name;
        this.task = task;
    }

    private static boolean enabled(Level level) {
        Session s = Session.current;
        Level threshold = s != null ? s.logLevel() : Level.INFO;
        return level.toInt() >= threshold.toInt();
    }

    @Override
    public boolean isTraceEnabled() {
        return enabled(Level.TRACE);
    }

    @Override
    public boolean isDebugEnabled() {
        return enabled(Level.DEBUG);
    }

    @Override
    public boolean isInfoEnabled() {
        return enabled(Level.INFO);
    }

    @Override
    public boolean isWarnEnabled() {
        return enabled(Level.WARN);
    }

    @Override
    public boolean isErrorEnabled() {
        return enabled(Level.ERROR);
    }

    @Override
    protected String getFullyQualifiedCallerName() {
        return null;
    }

    @Override
    protected void handleNormalizedLoggingCall(Level level, Marker marker, String pattern, Object[] args,
                                               Throwable throwable) {
        String msg = args == null || args.length == 0 ? String.valueOf(pattern)
                : MessageFormatter.basicArrayFormat(pattern, args);
        if (throwable != null) {
            msg = msg + "\n" + Session.stackTrace(throwable);
        }
        Request t = task != null ? task : Request.CURRENT.get();
        Session s = t != null ? t.session() : Session.current;
        LogLevel wire = switch (level) {
            case TRACE, DEBUG -> LogLevel.DEBUG;
            case INFO -> LogLevel.INFO;
            case WARN -> LogLevel.WARNING;
            case ERROR -> LogLevel.ERROR;
        };
        if (s == null) {
            System.err.println(wire.wireName() + " " + msg);
            return;
        }
        s.log(wire, msg, t, Instant.now());
    }
}
