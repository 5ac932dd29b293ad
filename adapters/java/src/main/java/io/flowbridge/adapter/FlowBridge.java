package io.flowbridge.adapter;

import java.io.FileDescriptor;
import java.io.FileInputStream;
import java.io.FileOutputStream;
import java.io.IOException;
import java.io.InputStream;
import java.io.OutputStream;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;

/**
 * Runs a handler as a flow-bridge child: the process's stdin and stdout carry the
 * protocol's frames (SPEC.md), stderr is free text for the bridge's log.
 *
 * <pre>{@code
 * public static void main(String[] args) {
 *     FlowBridge.run(task -> Map.of("n", task.configText().length()));
 * }
 * }</pre>
 */
public final class FlowBridge {
    private FlowBridge() {}

    private static boolean stdioTaken;

    /** {@link #run(Plugin)} for a plugin that has only an execute handler. */
    public static void run(Handler execute) {
        run(Plugin.builder(execute).build());
    }

    /**
     * Serves the bridge until {@code stop} or end of input, then exits the JVM with
     * status 0 (1 when the plugin could not start or the bridge broke the protocol). It
     * does not return: handler code may have left threads behind, and the bridge waits
     * for the process to end.
     */
    public static void run(Plugin plugin) {
        int status = serve(plugin);
        System.out.flush();
        System.err.flush();
        System.exit(status);
    }

    /**
     * Serves the bridge on this process's stdin and stdout and returns the exit status.
     * First of all it takes the protocol off {@code System.out} and {@code System.in}
     * (see {@link #takeStdio()}). Call it once per process.
     */
    public static int serve(Plugin plugin) {
        Channel c = takeStdio();
        return serve(plugin, c.in(), c.out());
    }

    /**
     * Serves the bridge over the given streams and returns the exit status, leaving the
     * process's stdio alone: for tests of a handler.
     */
    public static int serve(Plugin plugin, InputStream in, OutputStream out) {
        Session s = new Session(plugin, in, out);
        Session previous = Session.current;
        Session.current = s;
        try {
            return s.run();
        } finally {
            if (Session.current == s) {
                Session.current = previous;
            }
        }
    }

    /** The protocol's two streams. */
    public record Channel(InputStream in, OutputStream out) {}

    /**
     * Takes the protocol channel off the standard streams (SPEC.md section 7.1), as far
     * as Java can without native code: the frames travel on streams opened on the
     * original stdin and stdout descriptors, {@code System.out} and {@code System.err}
     * become UTF-8 streams on stderr, and {@code System.in} reads nothing. So
     * {@code System.out.println} and logging frameworks that write to System.out land in
     * the bridge's log. Java cannot re-point descriptor 1 itself, so native code writing
     * to fd 1 directly, and sub-processes started with {@code inheritIO()} or
     * {@code Redirect.INHERIT} for stdout, still write into the frames: redirect a
     * sub-process's output to {@code Redirect.PIPE} or to stderr instead.
     */
    public static synchronized Channel takeStdio() {
        if (stdioTaken) {
            throw new IllegalStateException("the protocol channel was already taken: serve() runs once per process");
        }
        stdioTaken = true;
        // Text printed before this point would sit in System.out's buffer and reach the
        // bridge in the middle of the frames; sent now, the bridge sees it first and says so.
        System.out.flush();
        OutputStream out = new FileOutputStream(FileDescriptor.out);
        InputStream in = new FileInputStream(FileDescriptor.in);
        PrintStream stderr = new PrintStream(new FileOutputStream(FileDescriptor.err), true, StandardCharsets.UTF_8);
        System.setOut(stderr);
        System.setErr(stderr);
        System.setIn(InputStream.nullInputStream());
        if (stdinIsTerminal()) {
            stderr.println("flow-bridge adapter: this program is a flow-bridge handler; it reads msgpack frames "
                    + "on stdin, so start it through flow-bridge (for a quick try: flow-bridge call -- <this command>)");
        }
        return new Channel(in, out);
    }

    private static boolean stdinIsTerminal() {
        Path fd0 = Path.of("/proc/self/fd/0");
        if (Files.exists(fd0, java.nio.file.LinkOption.NOFOLLOW_LINKS)) {
            try {
                String target = Files.readSymbolicLink(fd0).toString();
                return target.startsWith("/dev/pts/") || target.startsWith("/dev/tty") || target.equals("/dev/console");
            } catch (IOException | UnsupportedOperationException e) {
                return false;
            }
        }
        // Without /proc: before Java 22 a console exists only when stdin and stdout are terminals.
        return System.console() != null && Runtime.version().feature() < 22;
    }
}
