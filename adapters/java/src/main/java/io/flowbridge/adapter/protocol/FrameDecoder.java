package io.flowbridge.adapter.protocol;

import io.flowbridge.adapter.protocol.ProtocolException.Kind;
import java.util.ArrayList;
import java.util.List;

/**
 * Cuts a byte stream into frames and decodes them, without doing any I/O itself:
 * {@link #receive} takes whatever bytes arrived and returns the messages they completed;
 * {@link #end} says the input ended, which is clean only between frames.
 *
 * <p>Theory of operation: the decoder is either reading a 4-byte header or filling a body
 * array of the length that header declared. The declared length is checked against the
 * frame limit before the body is allocated, so a peer cannot make us allocate more than
 * the limit (SPEC.md section 1). After an error the decoder refuses further input: a
 * stream that broke framing cannot be trusted again.
 */
public final class FrameDecoder {
    private int maxFrame;
    private final byte[] header = new byte[Protocol.HEADER_BYTES];
    private int headerFill;
    private byte[] body; // non-null while a body is being filled
    private int bodyFill;
    private ProtocolException failed;

    public FrameDecoder() {
        this(Protocol.DEFAULT_MAX_FRAME);
    }

    public FrameDecoder(int maxFrame) {
        setMaxFrame(maxFrame);
    }

    /** The limit for frames whose header has not been read yet (hello announces it). */
    public void setMaxFrame(int maxFrame) {
        if (maxFrame < 0) {
            throw new IllegalArgumentException("maxFrame must not be negative");
        }
        this.maxFrame = maxFrame;
    }

    public int maxFrame() {
        return maxFrame;
    }

    /** Bytes received that are not yet part of a whole frame. */
    public int pendingBytes() {
        return body == null ? headerFill : Protocol.HEADER_BYTES + bodyFill;
    }

    /** Takes {@code len} bytes of {@code b} from {@code off}; returns the messages they complete. */
    public List<Message> receive(byte[] b, int off, int len) throws ProtocolException {
        List<Message> out = new ArrayList<>(1);
        receive(b, off, len, out);
        return out;
    }

    /** As {@link #receive(byte[], int, int)}, adding the messages to {@code out}. */
    public void receive(byte[] b, int off, int len, List<Message> out) throws ProtocolException {
        if (failed != null) {
            throw failed;
        }
        try {
            int end = off + len;
            while (off < end) {
                if (body == null) {
                    int take = Math.min(Protocol.HEADER_BYTES - headerFill, end - off);
                    System.arraycopy(b, off, header, headerFill, take);
                    headerFill += take;
                    off += take;
                    if (headerFill < Protocol.HEADER_BYTES) {
                        return;
                    }
                    long length = ((header[0] & 0xffL) << 24) | ((header[1] & 0xff) << 16)
                            | ((header[2] & 0xff) << 8) | (header[3] & 0xff);
                    if (length > maxFrame) {
                        throw new ProtocolException(Kind.FRAME_TOO_LARGE, "frame of " + length
                                + " bytes exceeds the limit of " + maxFrame + " (first bytes: " + snippet(header) + ")");
                    }
                    body = new byte[(int) length];
                    bodyFill = 0;
                }
                int take = Math.min(body.length - bodyFill, end - off);
                System.arraycopy(b, off, body, bodyFill, take);
                bodyFill += take;
                off += take;
                if (bodyFill == body.length) {
                    byte[] done = body;
                    body = null;
                    headerFill = 0;
                    out.add(MessageCodec.decode(done));
                }
            }
        } catch (ProtocolException e) {
            failed = e;
            throw e;
        }
    }

    /** The input ended: an error when it ended inside a frame. */
    public void end() throws ProtocolException {
        if (failed != null) {
            throw failed;
        }
        if (body != null) {
            failed = new ProtocolException(Kind.TRUNCATED,
                    "input ended inside a frame (" + bodyFill + " of " + body.length + " body bytes read)");
        } else if (headerFill > 0) {
            failed = new ProtocolException(Kind.TRUNCATED,
                    "input ended inside a frame header (" + headerFill + " of 4 bytes)");
        }
        if (failed != null) {
            throw failed;
        }
    }

    /** The bytes as text where printable, so that a stray print is recognisable. */
    private static String snippet(byte[] b) {
        StringBuilder s = new StringBuilder("\"");
        for (byte x : b) {
            int c = x & 0xff;
            if (c >= 0x20 && c < 0x7f && c != '"' && c != '\\') {
                s.append((char) c);
            } else {
                s.append(String.format("\\x%02x", c));
            }
        }
        return s.append('"').toString();
    }
}
