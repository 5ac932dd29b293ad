package plugin;

import io.flowbridge.adapter.HandlerException;
import io.flowbridge.adapter.Plugin;
import io.flowbridge.adapter.Request;
import java.util.Map;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * The {{name}} plugin's handler, written with flow-bridge's Java adapter.
 *
 * <p>flow-bridge starts this program once and sends it every task; execute answers each,
 * on its own thread. Return the task's result data, or throw (a failed request whose message
 * the flow shows). System.out.println is safe: the adapter sends it to the log.
 */
public final class Handler {
    private static final Logger LOG = LoggerFactory.getLogger(Handler.class);

    private Handler() {}

    static Object execute(Request request) throws Exception {
        Map<String, Object> config = request.configMap(); // the flow node's configuration, parsed as JSON
        if (config == null) {
            throw new HandlerException("the node's config must be a JSON object");
        }
        Object name = config.getOrDefault("name", "world");
        LOG.info("greeting {}", name); // a log line tied to this request
        return Map.of("greeting", "hello, " + name);
    }

    public static void main(String[] args) {
        Plugin.builder(Handler::execute)
                .debug(Handler::execute) // the same function answers the flow editor's debug runs
                .name("{{name}}")
                .build()
                .run();
    }
}
