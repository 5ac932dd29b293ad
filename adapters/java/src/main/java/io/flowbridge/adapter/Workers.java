package io.flowbridge.adapter;

import java.lang.reflect.Method;
import java.util.concurrent.Executor;
import java.util.concurrent.ExecutorService;

/**
 * Where requests run: a virtual thread each when the runtime has them (Java 21+), else a
 * {@link HandlerPool} of at most {@code concurrency} platform threads. The adapter compiles for Java 17,
 * so virtual threads are reached by reflection.
 */
final class Workers {
    private Workers() {}

    /** Set the system property to {@code false} to use the pool on any runtime. */
    static final String VIRTUAL_PROPERTY = "flowbridge.virtualThreads";

    /** Runs requests; {@link #shutdown()} lets idle threads go once all is answered. */
    interface Runner extends Executor {
        void shutdown();
    }

    static Runner create(int concurrency, boolean preferVirtual) {
        if (preferVirtual && !"false".equalsIgnoreCase(System.getProperty(VIRTUAL_PROPERTY))) {
            ExecutorService virtual = virtualThreadExecutor();
            if (virtual != null) {
                return new Runner() {
                    @Override
                    public void execute(Runnable r) {
                        virtual.execute(r);
                    }

                    @Override
                    public void shutdown() {
                        virtual.shutdown();
                    }
                };
            }
        }
        HandlerPool pool = new HandlerPool(concurrency);
        return new Runner() {
            @Override
            public void execute(Runnable r) {
                pool.execute(r);
            }

            @Override
            public void shutdown() {
                pool.shutdown();
            }
        };
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
