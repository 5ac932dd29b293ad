package io.flowbridge.adapter;

import java.io.IOException;
import java.io.OutputStream;
import java.util.concurrent.ConcurrentLinkedQueue;
import java.util.concurrent.locks.ReentrantLock;

/**
 * The only way frames reach the bridge. Threads hand it whole frames; whichever thread
 * finds the stream free writes its own frame and every frame queued meanwhile, in one
 * write when they fit the buffer, so that answers finishing together leave together and
 * no frame is ever split between writers (SPEC.md section 7, point 6). No thread of its
 * own: a writer thread would cost a wake-up per frame.
 *
 * <p>Theory of operation: {@link #send} queues the frame, then tries the lock. The lock
 * holder drains the queue into the buffer and writes it out; after unlocking it looks at
 * the queue once more, since a frame queued just before the unlock found the lock taken
 * and left it for the holder.
 */
final class Outbox {
    /** Bytes gathered into one write; a bigger frame is written on its own, without a copy. */
    private static final int BATCH_BYTES = 64 * 1024;

    private final ConcurrentLinkedQueue<byte[]> queue = new ConcurrentLinkedQueue<>();
    private final ReentrantLock lock = new ReentrantLock();
    private final OutputStream out;
    private final byte[] buf = new byte[BATCH_BYTES]; // guarded by lock
    private int fill; // guarded by lock
    private boolean failed; // guarded by lock
    private volatile boolean closed;

    Outbox(OutputStream out) {
        this.out = out;
    }

    /** Queues a whole frame and writes what is queued unless another thread is at it. */
    void send(byte[] frame) {
        if (closed) {
            return; // a straggling log after the end
        }
        queue.add(frame);
        drain(false);
    }

    /** Queues a frame without writing: what is queued later goes out after it. */
    void enqueue(byte[] frame) {
        queue.add(frame);
    }

    /** Returns once every frame sent so far has been written (or failed to be). */
    void flush() {
        drain(true);
    }

    /** Flushes; frames sent later are dropped. */
    void close() {
        flush();
        closed = true;
    }

    private void drain(boolean wait) {
        while (!queue.isEmpty()) {
            if (wait) {
                lock.lock();
            } else if (!lock.tryLock()) {
                return; // the holder writes our frame too
            }
            try {
                for (byte[] f; (f = queue.poll()) != null; ) {
                    add(f);
                }
                writeOut();
            } finally {
                lock.unlock();
            }
        }
    }

    private void add(byte[] frame) {
        if (failed) {
            return;
        }
        if (fill + frame.length > buf.length) {
            writeOut();
            if (frame.length > buf.length / 2) {
                write(frame, frame.length); // a big frame goes out on its own rather than through the buffer
                return;
            }
        }
        System.arraycopy(frame, 0, buf, fill, frame.length);
        fill += frame.length;
    }

    private void writeOut() {
        if (fill > 0) {
            write(buf, fill);
            fill = 0;
        }
    }

    private void write(byte[] b, int n) {
        if (failed) {
            return;
        }
        try {
            out.write(b, 0, n);
            out.flush();
        } catch (IOException e) {
            failed = true;
            System.err.println("flow-bridge adapter: cannot write to the bridge (" + e.getMessage()
                    + "); dropping frames");
        }
    }
}
