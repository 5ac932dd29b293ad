package io.flowbridge.adapter.protocol;

import static org.junit.jupiter.api.Assertions.assertEquals;

import java.util.Arrays;
import org.junit.jupiter.api.Test;

/**
 * The enums written by hand (they carry API of their own) name exactly what the generated
 * {@link Schema} does, in its order: a kind, type or level added to protocol/schema.json
 * fails here until the enum has it too.
 */
public class SchemaTest {
    @Test
    void errorKindsAreTheSchemas() {
        assertEquals(Schema.ERROR_KINDS,
                Arrays.stream(ProtocolException.Kind.values()).map(ProtocolException.Kind::wireName).toList());
    }

    @Test
    void pluginTypesAreTheSchemas() {
        assertEquals(Schema.PLUGIN_TYPES, Arrays.stream(PluginType.values()).map(PluginType::wireName).toList());
    }

    @Test
    void logLevelsAreTheSchemas() {
        assertEquals(Schema.LOG_LEVELS, Arrays.stream(LogLevel.values()).map(LogLevel::wireName).toList());
    }
}
