package riverflink;

import java.io.IOException;
import java.security.MessageDigest;
import java.security.NoSuchAlgorithmException;
import java.util.Arrays;
import java.util.Base64;

import org.apache.flink.api.common.typeinfo.TypeInformation;
import org.apache.flink.api.common.typeinfo.Types;
import org.apache.flink.connector.kafka.source.reader.deserializer.KafkaRecordDeserializationSchema;
import org.apache.flink.util.Collector;
import org.apache.kafka.clients.consumer.ConsumerRecord;

/**
 * Wraps every Kafka record, whatever its bytes, into one ASCII line that PyFlink can read:
 * {@code partition:offset:timestamp:base64(key):base64(value)}.
 *
 * <p>It never throws on content, so malformed events reach the Python parser, which routes them
 * to the dead-letter topic with their source offset.
 *
 * <p>A value longer than {@code maxValueBytes} (a record the parser rejects anyway) is cut here to
 * its first {@code keepBytes}, and the line gains a sixth field {@code length.sha256hex} of the whole
 * value: an oversized record then costs neither base64 work nor room in checkpointed batch state,
 * and its dead letter still names its true size and digest.
 */
public class EnvelopeDeserializationSchema implements KafkaRecordDeserializationSchema<String> {
    private static final long serialVersionUID = 1L;
    private final int maxValueBytes;
    private final int keepBytes;

    public EnvelopeDeserializationSchema() {
        this(1 << 20, 4096);
    }

    public EnvelopeDeserializationSchema(int maxValueBytes, int keepBytes) {
        this.maxValueBytes = maxValueBytes;
        this.keepBytes = Math.min(keepBytes, maxValueBytes);
    }

    @Override
    public void deserialize(ConsumerRecord<byte[], byte[]> record, Collector<String> out) throws IOException {
        Base64.Encoder b64 = Base64.getEncoder();
        byte[] key = record.key();
        byte[] value = record.value();
        String oversize = "";
        if (value != null && value.length > maxValueBytes) {
            oversize = ":" + value.length + "." + sha256(value);
            value = Arrays.copyOf(value, keepBytes);
        }
        out.collect(record.partition() + ":" + record.offset() + ":" + record.timestamp() + ":"
                + (key == null ? "" : b64.encodeToString(key)) + ":"
                + (value == null ? "" : b64.encodeToString(value)) + oversize);
    }

    private static String sha256(byte[] bytes) {
        try {
            StringBuilder hex = new StringBuilder(64);
            for (byte b : MessageDigest.getInstance("SHA-256").digest(bytes)) {
                hex.append(Character.forDigit((b >> 4) & 0xf, 16)).append(Character.forDigit(b & 0xf, 16));
            }
            return hex.toString();
        } catch (NoSuchAlgorithmException e) {
            return "";
        }
    }

    @Override
    public TypeInformation<String> getProducedType() {
        return Types.STRING;
    }
}
