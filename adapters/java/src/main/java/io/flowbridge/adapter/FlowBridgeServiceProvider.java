package io.flowbridge.adapter;

import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.ConcurrentMap;
import org.slf4j.ILoggerFactory;
import org.slf4j.IMarkerFactory;
import org.slf4j.Logger;
import org.slf4j.helpers.BasicMDCAdapter;
import org.slf4j.helpers.BasicMarkerFactory;
import org.slf4j.spi.MDCAdapter;
import org.slf4j.spi.SLF4JServiceProvider;

/**
 * The SLF4J 2 provider that turns every SLF4J logger's records into log frames, found by
 * SLF4J through {@code META-INF/services}. With another provider on the class path
 * (logback, slf4j-simple), SLF4J picks one and warns; start the JVM with
 * {@code -Dslf4j.provider=io.flowbridge.adapter.FlowBridgeServiceProvider} to pick this one.
 */
public final class FlowBridgeServiceProvider implements SLF4JServiceProvider {
    /** The SLF4J API version this provider is built for. */
    public static final String REQUESTED_API_VERSION = "2.0.99";

    private ILoggerFactory loggerFactory;
    private IMarkerFactory markerFactory;
    private MDCAdapter mdcAdapter;

    @Override
    public ILoggerFactory getLoggerFactory() {
        return loggerFactory;
    }

    @Override
    public IMarkerFactory getMarkerFactory() {
        return markerFactory;
    }

    @Override
    public MDCAdapter getMDCAdapter() {
        return mdcAdapter;
    }

    @Override
    public String getRequestedApiVersion() {
        return REQUESTED_API_VERSION;
    }

    @Override
    public void initialize() {
        ConcurrentMap<String, Logger> loggers = new ConcurrentHashMap<>();
        loggerFactory = name -> loggers.computeIfAbsent(name, n -> new FrameLogger(n, null));
        markerFactory = new BasicMarkerFactory();
        mdcAdapter = new BasicMDCAdapter();
    }
}
