package io.flowbridge.adapter;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.flowbridge.adapter.protocol.FrameDecoder;
import io.flowbridge.adapter.protocol.Message;
import io.flowbridge.adapter.protocol.MessageCodec;
import io.flowbridge.adapter.protocol.PluginType;
import io.flowbridge.adapter.protocol.Protocol;
import io.flowbridge.adapter.protocol.ProtocolException;
import java.io.IOException;
import java.io.InputStream;
import java.io.OutputStream;
import java.nio.channels.Channels;
import java.nio.channels.Pipe;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.LinkedBlockingQueue;
import java.util.concurrent.TimeUnit;

/**
 * The bridge's side of a conversation with a plugin served in this JVM over in-memory
 * pipes: send frames, take the child's frames, close its input, read its exit status.
 */
final class TestBridge implements AutoCloseable {
    static final long WAIT_SECONDS = 10;

    private final OutputStream toChild;
    private final LinkedBlockingQueue<Object> fromChild = new LinkedBlockingQueue<>();
    final CompletableFuture<Integer> exit = new CompletableFuture<>();
    final List<Message.Log> logs = new ArrayList<>();
    final Map<Long, Message> answers = new HashMap<>();

    TestBridge(Plugin plugin) throws IOException {
        Pipe in = Pipe.open();
        Pipe out = Pipe.open();
        toChild = Channels.newOutputStream(in.sink());
        InputStream childIn = Channels.newInputStream(in.source());
        OutputStream childOut = Channels.newOutputStream(out.sink());
        Thread serve = new Thread(() -> {
            try {
                exit.complete(FlowBridge.serve(plugin, childIn, childOut));
            } catch (Throwable e) {
                exit.completeExceptionally(e);
            } finally {
                try {
                    childOut.close();
                } catch (IOException e) {
                    // nothing to do
                }
            }
        }, "test-serve");
        serve.setDaemon(true);
        serve.start();
        InputStream fromOut = Channels.newInputStream(out.source());
        Thread reader = new Thread(() -> read(fromOut), "test-reader");
        reader.setDaemon(true);
        reader.start();
    }

    private void read(InputStream s) {
        FrameDecoder d = new FrameDecoder(Protocol.MAX_MAX_FRAME);
        byte[] buf = new byte[65536];
        try {
            for (int n; (n = s.read(buf)) > 0; ) {
                for (Message m : d.receive(buf, 0, n)) {
                    fromChild.add(m);
                }
            }
            d.end();
            fromChild.add("eof");
        } catch (IOException | ProtocolException e) {
            fromChild.add(e);
        }
    }

    void send(Message m) throws IOException {
        sendRaw(MessageCodec.encode(m));
    }

    void sendRaw(byte[] b) throws IOException {
        toChild.write(b);
        toChild.flush();
    }

    Message.Ready hello() throws Exception {
        return hello(Protocol.DEFAULT_MAX_FRAME);
    }

    Message.Ready hello(int maxFrame) throws Exception {
        send(new Message.Hello(List.of(1L), "test", PluginType.SERVICE, maxFrame, "test bridge"));
        Message m = next();
        assertTrue(m instanceof Message.Ready, "expected ready, got " + m);
        return (Message.Ready) m;
    }

    void task(long id, String json) throws IOException {
        task(id, json.getBytes(StandardCharsets.UTF_8), false);
    }

    void task(long id, byte[] config, boolean debug) throws IOException {
        send(new Message.Request(debug, id, config, "", "", "", "", "e" + id, 0));
    }

    /** The next frame; null at the end of the child's output. */
    Message next() throws Exception {
        Object o = fromChild.poll(WAIT_SECONDS, TimeUnit.SECONDS);
        assertNotNull(o, "no frame within " + WAIT_SECONDS + " s");
        if (o instanceof Exception e) {
            throw e;
        }
        if ("eof".equals(o)) {
            fromChild.add(o);
            return null;
        }
        Message m = (Message) o;
        if (m instanceof Message.Log l) {
            logs.add(l);
        } else if (m instanceof Message.Result r) {
            answers.put(r.id(), r);
        } else if (m instanceof Message.Error e) {
            answers.put(e.id(), e);
        }
        return m;
    }

    /** Takes frames until id has its answer. */
    Message answer(long id) throws Exception {
        while (!answers.containsKey(id)) {
            Message m = next();
            assertNotNull(m, "the child's output ended before id " + id + " was answered");
        }
        return answers.get(id);
    }

    Object resultData(long id) throws Exception {
        Message m = answer(id);
        assertTrue(m instanceof Message.Result, "expected a result for " + id + ", got " + m);
        return ((Message.Result) m).data();
    }

    Message.Error error(long id) throws Exception {
        Message m = answer(id);
        assertTrue(m instanceof Message.Error, "expected an error for " + id + ", got " + m);
        return (Message.Error) m;
    }

    void closeInput() throws IOException {
        toChild.close();
    }

    int exitStatus() throws Exception {
        return exit.get(WAIT_SECONDS, TimeUnit.SECONDS);
    }

    /** Takes the rest of the child's output; asserts that it ends. */
    void drain() throws Exception {
        while (next() != null) {
            // collected into logs and answers
        }
    }

    @Override
    public void close() throws IOException {
        toChild.close();
    }

    static void assertData(Object want, Object got) {
        assertEquals(String.valueOf(want), String.valueOf(got));
    }
}
