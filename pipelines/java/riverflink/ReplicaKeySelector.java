package riverflink;

import java.nio.charset.StandardCharsets;
import java.util.Base64;
import java.util.zip.CRC32;

import org.apache.flink.api.java.functions.KeySelector;
import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.databind.JsonNode;
import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.databind.ObjectMapper;

/**
 * The replica key of an envelope line ({@code partition:offset:timestamp:b64(key):b64(value)}):
 * crc32 of the event's key field, else of the Kafka record key, else of its "id", else of
 * "partition:offset", modulo the number of replicas. Never throws on malformed events: they get a
 * key like any other and are dead-lettered by the Python replica trainer.
 */
public class ReplicaKeySelector implements KeySelector<String, Integer> {
    private static final long serialVersionUID = 1L;
    private static final ObjectMapper JSON = new ObjectMapper();
    private final int replicas;
    private final String keyField;

    public ReplicaKeySelector(int replicas, String keyField) {
        this.replicas = replicas;
        this.keyField = keyField;
    }

    @Override
    public Integer getKey(String envelope) {
        String[] p = envelope.split(":", 5);
        String token = null;
        JsonNode doc = null;
        if (p.length == 5) {
            try {
                doc = JSON.readTree(Base64.getDecoder().decode(p[4]));
            } catch (Exception | StackOverflowError e) {
                doc = null;
            }
            if (doc != null && doc.isObject() && keyField != null && doc.hasNonNull(keyField)) {
                token = doc.get(keyField).asText();
            }
            if (token == null && !p[3].isEmpty()) {
                token = new String(Base64.getDecoder().decode(p[3]), StandardCharsets.UTF_8);
            }
            if (token == null && doc != null && doc.isObject() && doc.hasNonNull("id")) {
                token = doc.get("id").asText();
            }
            if (token == null) {
                token = p[0] + ":" + p[1];
            }
        } else {
            token = envelope;
        }
        CRC32 crc = new CRC32();
        crc.update(token.getBytes(StandardCharsets.UTF_8));
        return (int) (crc.getValue() % replicas);
    }
}
