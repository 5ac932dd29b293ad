package io.flowbridge.adapter;

/** A start or stop hook. */
@FunctionalInterface
public interface Hook {
    void run() throws Exception;
}
