package io.flowbridge.adapter;

/** Told when the bridge's link to the engine goes up (true) or down (false). */
@FunctionalInterface
public interface StateListener {
    void onConnectionStateChanged(boolean connected) throws Exception;
}
