package io.flowbridge.adapter;

import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicInteger;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;

/** The platform-thread pool: quick requests share threads, blocked ones never hold others up. */
@Timeout(30)
class HandlerPoolTest {
    @Test
    void requestsThatBlockEachGetAThread() throws Exception {
        HandlerPool pool = new HandlerPool(64);
        CountDownLatch all = new CountDownLatch(64);
        CountDownLatch done = new CountDownLatch(64);
        for (int i = 0; i < 64; i++) {
            pool.execute(() -> {
                all.countDown();
                try {
                    // Returns only once all 64 run at the same time.
                    assertTrue(all.await(10, TimeUnit.SECONDS));
                } catch (InterruptedException e) {
                    Thread.currentThread().interrupt();
                }
                done.countDown();
            });
        }
        assertTrue(done.await(20, TimeUnit.SECONDS), "the 64 requests did not all run at once");
        pool.shutdown();
    }

    @Test
    void aRequestBehindABlockedOneIsNotKeptWaiting() throws Exception {
        HandlerPool pool = new HandlerPool(4);
        CountDownLatch release = new CountDownLatch(1);
        CountDownLatch second = new CountDownLatch(1);
        pool.execute(() -> {
            try {
                release.await();
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
            }
        });
        long started = System.nanoTime();
        pool.execute(second::countDown);
        assertTrue(second.await(5, TimeUnit.SECONDS));
        long waitedMs = TimeUnit.NANOSECONDS.toMillis(System.nanoTime() - started);
        assertTrue(waitedMs < 1000, "waited " + waitedMs + " ms");
        release.countDown();
        pool.shutdown();
    }

    @Test
    void manyQuickRequestsAllRun() throws Exception {
        HandlerPool pool = new HandlerPool(8);
        AtomicInteger ran = new AtomicInteger();
        CountDownLatch done = new CountDownLatch(100_000);
        for (int i = 0; i < 100_000; i++) {
            pool.execute(() -> {
                ran.incrementAndGet();
                done.countDown();
            });
        }
        assertTrue(done.await(20, TimeUnit.SECONDS), ran.get() + " of 100000 ran");
        pool.shutdown();
    }
}
