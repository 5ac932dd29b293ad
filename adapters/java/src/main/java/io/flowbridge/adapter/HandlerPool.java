package io.flowbridge.adapter;

import java.util.concurrent.ConcurrentLinkedDeque;
import java.util.concurrent.ConcurrentLinkedQueue;
import java.util.concurrent.Executor;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.concurrent.locks.LockSupport;

/**
 * Platform threads for requests when there are no virtual threads (Java 17 to 20).
 *
 * <p>Theory of operation. Waking a parked thread costs a system call and a context switch,
 * more than a short handler itself, so the pool does not wake a thread per request. The
 * reader queues each request and wakes a worker only when no worker is awake; an awake
 * worker takes request after request from the queue until it is empty, then parks. So a
 * burst of quick requests costs one wake-up, not one each.
 *
 * <p>A handler may block for long (a sleep, a device), though, and the requests queued
 * behind it must not wait for it. A watchdog thread looks at the queue every
 * {@link #TICK_NANOS} while requests are in flight: a request still queued since the last
 * look gets a worker of its own, woken or started, up to {@code maxThreads}, which the
 * bridge never exceeds with requests in flight. A request therefore waits at most about
 * two ticks for a thread while every worker is busy, and not at all otherwise.
 */
final class HandlerPool implements Executor {
    /** How often the watchdog looks for requests stuck behind busy workers: 0.5 ms. */
    static final long TICK_NANOS = 500_000;

    /** An idle worker ends after this long without work, so a quiet plugin holds few threads. */
    private static final long IDLE_NANOS = TimeUnit.SECONDS.toNanos(30);

    private final int maxThreads;
    private final ConcurrentLinkedQueue<Runnable> queue = new ConcurrentLinkedQueue<>();
    private final ConcurrentLinkedDeque<Thread> parked = new ConcurrentLinkedDeque<>();
    private final AtomicInteger threads = new AtomicInteger();
    private final AtomicInteger awake = new AtomicInteger(); // workers not parked
    private final AtomicInteger pending = new AtomicInteger(); // queued or running requests
    private final AtomicInteger names = new AtomicInteger();
    private final Thread watchdog;
    private volatile boolean shutdown;

    HandlerPool(int maxThreads) {
        this.maxThreads = maxThreads;
        watchdog = new Thread(this::watch, "flow-bridge-pool-watchdog");
        watchdog.setDaemon(true);
        watchdog.start();
    }

    @Override
    public void execute(Runnable request) {
        queue.add(request);
        if (pending.getAndIncrement() == 0) {
            LockSupport.unpark(watchdog); // work begins: the watchdog starts looking
        }
        // Pairs with the worker's "awake--, then look at the queue": one of the two sees the other.
        if (awake.get() == 0) {
            wakeOne();
        }
    }

    void shutdown() {
        shutdown = true;
        LockSupport.unpark(watchdog);
        for (Thread t : parked) {
            LockSupport.unpark(t);
        }
    }

    /** Wakes a parked worker or starts one; false when every allowed thread is busy. */
    private boolean wakeOne() {
        Thread t = parked.pollFirst();
        if (t != null) {
            awake.incrementAndGet();
            LockSupport.unpark(t);
            return true;
        }
        while (true) {
            int n = threads.get();
            if (n >= maxThreads) {
                return false;
            }
            if (threads.compareAndSet(n, n + 1)) {
                break;
            }
        }
        awake.incrementAndGet();
        Thread w = new Thread(this::work, "flow-bridge-handler-" + names.incrementAndGet());
        w.setDaemon(true);
        w.start();
        return true;
    }

    private void work() {
        Thread self = Thread.currentThread();
        while (!shutdown) {
            Runnable r = queue.poll();
            if (r != null) {
                try {
                    r.run();
                } catch (Throwable e) {
                    // Session.runHandler catches everything a handler throws; this is the adapter's bug.
                    System.err.println("flow-bridge adapter: a request failed outside its handler: " + e);
                } finally {
                    pending.decrementAndGet();
                }
                continue;
            }
            awake.decrementAndGet();
            if (!queue.isEmpty()) { // queued after our poll, by a reader that saw us awake
                awake.incrementAndGet();
                continue;
            }
            parked.addFirst(self);
            long parkedAt = System.nanoTime();
            LockSupport.parkNanos(this, IDLE_NANOS);
            Thread.interrupted(); // a cancel that raced the end of its request
            if (parked.remove(self)) {
                // Not woken by wakeOne (it would have taken us off the stack): a timeout or a
                // spurious wake-up. Idle long enough: end; else look at the queue again.
                if (System.nanoTime() - parkedAt >= IDLE_NANOS && queue.isEmpty()) {
                    threads.decrementAndGet();
                    return;
                }
                awake.incrementAndGet();
            }
        }
        threads.decrementAndGet();
    }

    private void watch() {
        Runnable lastHead = null;
        while (!shutdown) {
            if (pending.get() == 0) {
                lastHead = null;
                LockSupport.park(this); // nothing in flight: wait for execute()
                continue;
            }
            LockSupport.parkNanos(this, TICK_NANOS);
            Runnable head = queue.peek();
            if (head != null && head == lastHead) {
                // Queued since the last look: every awake worker is busy. One worker per
                // queued request, so that none waits for another's handler.
                for (int i = queue.size(); i > 0 && wakeOne(); i--) {
                    // woken or started
                }
            }
            lastHead = queue.peek();
        }
    }
}
