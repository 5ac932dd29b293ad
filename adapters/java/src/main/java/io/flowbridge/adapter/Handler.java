package io.flowbridge.adapter;

/**
 * Handles one request. Return the result data (a Map, List, String, Number, Boolean,
 * byte[], record, {@link Json#NULL}, or null for an empty map), a {@link Reply} to add a message and
 * detail, or a {@link java.util.concurrent.CompletionStage} of either. Throw to fail:
 * {@link HandlerException} for a chosen message and detail, anything else for its
 * message with the stack trace as detail.
 */
@FunctionalInterface
public interface Handler {
    Object handle(Request request) throws Exception;
}
