package io.flowbridge.adapter;

import java.io.IOException;
import java.io.OutputStream;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.LinkedBlockingQueue;

/**
 * The one writer of frames. Threads hand it whole frames; its thread copies them into a
 * buffer and writes the buffer out whenever the queue runs dry (or the buffer is full),
 * so that answers finishing together leave in one write and no frame is ever split
 * between writers (SPEC.md section 7, point 6).
 */
final class Outbox {
    /** Bytes gathered into one write; a bigger frame is written on its own, without a copy. */
    private static final int BATCH_BYTES = 64 * 1024;

    /** A flush request: the latch opens once everything queued before it was written. */
    private record Marker(CountDownLatch written, boolean last) {}

    private final LinkedBlockingQueue<Object> queue = new LinkedBlockingQueue<>();
    private final OutputStream out;
    private final Thread thread;
    private volatile boolean closed;
    private final byte[] buf = new byte[BATCH_BYTES];
    private int fill;
    private boolean failed;

    Outbox(OutputStream out) {
        this.out = out;
        this.thread = new Thread(this::loop, "flow-bridge-writer");
        thread.setDaemon(true);
        thread.start();
    }

    /** Queues a whole frame; after {@link #close()} frames are dropped. */
    void send(byte[] frame) {
        if (!closed) {
            queue.add(frame);
        }
    }

    /** Waits until every frame sent so far has been written (or failed to be). */
    void flush() {
        await(new Marker(new CountDownLatch(1), false));
    }

    /** Flushes, then ends the writer; later frames (a straggling log) are dropped. */
    void close() {
        if (!closed) {
            await(new Marker(new CountDownLatch(1), true));
            closed = true;
        }
    }

    private void await(Marker m) {
        queue.add(m);
        boolean interrupted = false;
        while (true) {
            try {
                m.written.await();
                break;
            } catch (InterruptedException e) {
                interrupted = true;
            }
        }
        if (interrupted) {
            Thread.currentThread().interrupt();
        }
    }

    private void loop() {
        try {
            while (true) {
                Object item = queue.take();
                while (item != null) {
                    if (item instanceof Marker m) {
                        writeOut();
                        m.written.countDown();
                        if (m.last) {
                            return;
                        }
                    } else {
                        add((byte[]) item);
                    }
                    item = queue.poll();
                }
                writeOut();
            }
        } catch (InterruptedException e) {
            // Only the JVM's exit interrupts this daemon thread.
        }
    }

    private void add(byte[] frame) {
        if (failed) {
            return;
        }
        if (fill + frame.length > buf.length) {
            writeOut();
            if (frame.length > buf.length / 2) {
                // A big frame goes out on its own rather than through the buffer.
                write(frame, frame.length);
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
