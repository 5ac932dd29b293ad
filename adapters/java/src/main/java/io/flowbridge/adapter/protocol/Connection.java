package io.flowbridge.adapter.protocol;

import io.flowbridge.adapter.protocol.ProtocolException.Kind;
import io.flowbridge.adapter.protocol.Schema.ConnState;
import io.flowbridge.adapter.protocol.Schema.MsgType;
import io.flowbridge.adapter.protocol.Schema.Role;
import java.util.HashSet;
import java.util.List;
import java.util.Locale;
import java.util.Set;

/**
 * Who may send what, when (SPEC.md section 2): the state table, read from {@link Schema}
 * (generated from protocol/schema.json, as every other side's is), and the ids in flight,
 * the same for both sides. A side calls {@link #send} before it writes a frame (a refusal
 * means it was about to break the rules) and {@link #receive} for each frame it reads (a
 * refusal names the peer's error). Both move through the table as the frames go
 * by, so a bridge's and a child's connection agree at every step; the shared vectors'
 * sequences replay exactly that. Safe for use from several threads.
 */
public final class Connection {
    private final Role role;
    private ConnState state = ConnState.AWAIT_HELLO;
    private List<Long> offered = List.of();
    private final Set<Long> inFlight = new HashSet<>();

    public Connection(Role role) {
        this.role = role;
    }

    public synchronized ConnState state() {
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
        MsgType type = m.msgType();
        if (type.sender() != from) {
            throw new ProtocolException(Kind.UNEXPECTED, "a " + type.wireName() + " message is never sent by the "
                    + name(from));
        }
        if (!state.sends(from).contains(type)) {
            throw new ProtocolException(Kind.UNEXPECTED, "the " + name(from) + " may not send "
                    + type.wireName() + " in state " + state.wireName());
        }
        if (m instanceof Message.Ready r && !offered.contains(r.protocol())) {
            throw new ProtocolException(Kind.BAD_FIELD, "ready names protocol " + r.protocol()
                    + ", which hello did not offer (offered " + offered + ")");
        }
        // The checks above change nothing; from here on the frame counts as sent.
        if (type.inFlight() > 0) {
            long id = requestId(m);
            if (!inFlight.add(id)) {
                throw new ProtocolException(Kind.DUPLICATE_ID, "a " + type.wireName() + " with id " + id
                        + ", which is already in flight");
            }
        } else if (type.inFlight() < 0) {
            long id = requestId(m);
            if (!inFlight.remove(id)) {
                throw new ProtocolException(Kind.UNKNOWN_ID, "a " + type.wireName() + " for id " + id
                        + ", which is not in flight (never sent, or answered already)");
            }
        }
        if (m instanceof Message.Hello h) {
            offered = h.protocols();
        }
        ConnState next = type.after();
        if (next != null) {
            state = next;
        }
    }

    private static String name(Role role) {
        return role.name().toLowerCase(Locale.ROOT);
    }

    /** The id of a message that opens or closes a request (the schema says which those are). */
    private static long requestId(Message m) {
        if (m instanceof Message.Request r) {
            return r.id();
        } else if (m instanceof Message.Result r) {
            return r.id();
        } else if (m instanceof Message.Error e) {
            return e.id();
        }
        throw new IllegalStateException("a " + m.type() + " message carries no request id");
    }
}
