package riverflink;

import java.nio.charset.StandardCharsets;
import java.util.Arrays;

import org.apache.flink.api.common.serialization.SerializationSchema;

/**
 * Records that carry their own Kafka key: a string {@code "<key>\n<value>"} (the key is everything before
 * the first newline; compact JSON values hold none). {@code new KeyedLineSchema(true)} serializes the key,
 * {@code new KeyedLineSchema(false)} the value. The sharded model's documents use it on {@code models}:
 * each shard's slices under {@code <model>#<shard>}, manifests under {@code <model>}, so that a compacted
 * topic keeps each one's newest.
 */
public class KeyedLineSchema implements SerializationSchema<String> {
    private static final long serialVersionUID = 1L;
    private final boolean key;

    public KeyedLineSchema(boolean key) {
        this.key = key;
    }

    @Override
    public byte[] serialize(String element) {
        byte[] bytes = element.getBytes(StandardCharsets.UTF_8);
        int cut = element.indexOf('\n');
        if (cut < 0) {
            return key ? null : bytes;
        }
        int at = element.substring(0, cut).getBytes(StandardCharsets.UTF_8).length;
        return key ? Arrays.copyOfRange(bytes, 0, at) : Arrays.copyOfRange(bytes, at + 1, bytes.length);
    }
}
