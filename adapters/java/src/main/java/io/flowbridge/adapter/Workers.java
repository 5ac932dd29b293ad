package io.flowbridge.adapter;

import java.lang.reflect.Method;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.SynchronousQueue;
import java.util.concurrent.ThreadPoolExecutor;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicInteger;

/**
 * Where requests run: a virtual thread each when the runtime has them (Java 21+), else a
 * pool of at most {@code concurrency} platform threads. The adapter compiles for Java 17,
 * so virtual threads are reached by reflection.
 */
final class Workers {
    private Workers() {}

    /** Idle pool threads end after this long, so a quiet plugin holds few threads. */
    private static final long IDLE_SECONDS = 30;

    /** Set the system property to {@code false} to use the pool on any runtime. */
    static final String VIRTUAL_PROPERTY = "flowbridge.virtualThreads";

    static ExecutorService create(int concurrency, boolean preferVirtual) {
        if (preferVirtual && !"false".equalsIgnoreCase(System.getProperty(VIRTUAL_PROPERTY))) {
            ExecutorService virtual = virtualThreadExecutor();
            if (virtual != null) {
                return virtual;
            }
        }
        // An idle thread takes a request straight from the reader (a SynchronousQueue hands
        // over, it holds nothing); when none is idle a new one starts, up to concurrency,
        // which the bridge never exceeds. So a burst grows the pool and quiet shrinks it.
        AtomicInteger n = new AtomicInteger();
        return new ThreadPoolExecutor(0, concurrency, IDLE_SECONDS, TimeUnit.SECONDS, new SynchronousQueue<>(), r -> {
            Thread t = new Thread(r, "flow-bridge-handler-" + n.incrementAndGet());
            t.setDaemon(true);
            return t;
        });
    }

    /** Whether requests would run on virtual threads here. */
    static boolean virtualThreadsAvailable() {
        return virtualFactoryMethod() != null;
    }

    private static Method virtualFactoryMethod() {
        try {
            return java.util.concurrent.Executors.class.getMethod("newVirtualThreadPerTaskExecutor");
        } catch (NoSuchMethodException e) {
            return null; // Java 17-20
        }
    }

    private static ExecutorService virtualThreadExecutor() {
        Method m = virtualFactoryMethod();
        if (m == null) {
            return null;
        }
        try {
            return (ExecutorService) m.invoke(null);
        } catch (ReflectiveOperationException | RuntimeException e) {
            return null; // a preview-only runtime (Java 19, 20) refuses without --enable-preview
        }
    }
}
