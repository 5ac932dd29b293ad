package io.flowbridge.adapter.protocol;

/**
 * Bytes that break the stdio protocol (SPEC.md section 4). A stream that broke framing
 * cannot be trusted again, so whoever catches this ends the conversation.
 */
public final class ProtocolException extends Exception {
    private static final long serialVersionUID = 1L;

    /** The protocol error kinds of SPEC.md section 4, as the shared vectors name them. */
    public enum Kind {
        FRAME_TOO_LARGE("frame_too_large"),
        TRUNCATED("truncated"),
        BAD_MSGPACK("bad_msgpack"),
        NOT_A_MAP("not_a_map"),
        MISSING_TYPE("missing_type"),
        UNKNOWN_TYPE("unknown_type"),
        BAD_FIELD("bad_field"),
        UNEXPECTED("unexpected"),
        UNKNOWN_ID("unknown_id"),
        DUPLICATE_ID("duplicate_id");

        private final String wireName;

        Kind(String wireName) {
            this.wireName = wireName;
        }

        /** The kind's name in SPEC.md and in protocol/vectors.json. */
        public String wireName() {
            return wireName;
        }
    }

    private final Kind kind;

    public ProtocolException(Kind kind, String message) {
        super(message);
        this.kind = kind;
    }

    public Kind kind() {
        return kind;
    }

    @Override
    public String getMessage() {
        return "flow-bridge protocol error (" + kind.wireName + "): " + super.getMessage();
    }
}
