package riverflink;

import java.nio.charset.StandardCharsets;

import org.apache.flink.api.common.serialization.SerializationSchema;

/**
 * The same record key for every record: the model name on the {@code models} topic, so that a
 * compacted topic keeps each model's newest document.
 */
public class ConstantKeySchema implements SerializationSchema<String> {
    private static final long serialVersionUID = 1L;
    private final byte[] key;

    public ConstantKeySchema(String key) {
        this.key = key.getBytes(StandardCharsets.UTF_8);
    }

    @Override
    public byte[] serialize(String element) {
        return key;
    }
}
