package io.flowbridge.adapter;

import java.lang.reflect.Method;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.LinkedBlockingQueue;
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
        AtomicInteger n = new AtomicInteger();
        ThreadPoolExecutor pool = new ThreadPoolExecutor(concurrency, concurrency, IDLE_SECONDS, TimeUnit.SECONDS,
                new LinkedBlockingQueue<>(), r -> {
                    Thread t = new Thread(r, "flow-bridge-handler-" + n.incrementAndGet());
                    t.setDaemon(true);
                    return t;
                });
        pool.allowCoreThreadTimeOut(true);
        return pool;
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
