package io.flowbridge.adapter.protocol;

import io.flowbridge.adapter.protocol.ProtocolException.Kind;
import java.util.HashSet;
import java.util.List;
import java.util.Set;

/**
 * Who may send what, when (SPEC.md section 2): the state table and the ids in flight, in
 * one place, the same for both sides. A side calls {@link #send} before it writes a frame
 * (a refusal means it was about to break the rules) and {@link #receive} for each frame it
 * reads (a refusal names the peer's error). Both move through the table as the frames go
 * by, so a bridge's and a child's connection agree at every step; the shared vectors'
 * sequences replay exactly that. Safe for use from several threads.
 */
public final class Connection {
    /** The side this connection is on. */
    public enum Role { BRIDGE, CHILD }

    /** The states of SPEC.md section 2, "Who may send what, when". */
    public enum State { AWAIT_HELLO, AWAIT_READY, OPEN, STOPPING }

    private static final Set<String> BRIDGE_SENDS = Set.of("hello", "task", "debug", "cancel", "state", "stop");
    private static final Set<String> CHILD_SENDS = Set.of("ready", "result", "error", "log");

    private final Role role;
    private State state = State.AWAIT_HELLO;
    private List<Long> offered = List.of();
    private final Set<Long> inFlight = new HashSet<>();

    public Connection(Role role) {
        this.role = role;
    }

    public synchronized State state() {
        return state;
    }

    /** Whether request {@code id} is in flight (sent and not yet answered). */
    public synchronized boolean inFlight(long id) {
        return inFlight.contains(id);
    }

    /** Checks that this side may send {@code m} now, and moves on as if it had. */
    public synchronized void send(Message m) throws ProtocolException {
        apply(m, role);
    }

    /** Checks that the peer may have sent {@code m} now, and moves on as it has. */
    public synchronized void receive(Message m) throws ProtocolException {
        apply(m, role == Role.BRIDGE ? Role.CHILD : Role.BRIDGE);
    }

    private void apply(Message m, Role from) throws ProtocolException {
        String type = m.type();
        boolean bridge = from == Role.BRIDGE;
        if (!(bridge ? BRIDGE_SENDS : CHILD_SENDS).contains(type)) {
            throw new ProtocolException(Kind.UNEXPECTED, "a " + type + " message is never sent by the "
                    + (bridge ? "bridge" : "child"));
        }
        if (!allowed(type, bridge)) {
            throw new ProtocolException(Kind.UNEXPECTED, "the " + (bridge ? "bridge" : "child") + " may not send "
                    + type + " in state " + state.name().toLowerCase());
        }
        if (m instanceof Message.Ready r && !offered.contains(r.protocol())) {
            throw new ProtocolException(Kind.BAD_FIELD, "ready names protocol " + r.protocol()
                    + ", which hello did not offer (offered " + offered + ")");
        }
        // The checks above change nothing; from here on the frame counts as sent.
        if (m instanceof Message.Request r) {
            if (!inFlight.add(r.id())) {
                throw new ProtocolException(Kind.DUPLICATE_ID, "a " + type + " with id " + r.id()
                        + ", which is already in flight");
            }
        } else if (m instanceof Message.Result r) {
            answer(r.id(), type);
        } else if (m instanceof Message.Error e) {
            answer(e.id(), type);
        } else if (m instanceof Message.Hello h) {
            offered = h.protocols();
            state = State.AWAIT_READY;
        } else if (m instanceof Message.Ready) {
            state = State.OPEN;
        } else if (m instanceof Message.Stop) {
            state = State.STOPPING;
        }
    }

    private void answer(long id, String type) throws ProtocolException {
        if (!inFlight.remove(id)) {
            throw new ProtocolException(Kind.UNKNOWN_ID, "a " + type + " for id " + id
                    + ", which is not in flight (never sent, or answered already)");
        }
    }

    private boolean allowed(String type, boolean bridge) {
        switch (state) {
            case AWAIT_HELLO:
                return bridge && type.equals("hello");
            case AWAIT_READY:
                return !bridge && type.equals("ready");
            case OPEN:
                return bridge ? !type.equals("hello") : !type.equals("ready");
            case STOPPING:
                return !bridge && !type.equals("ready");
            default:
                return false;
        }
    }
}
