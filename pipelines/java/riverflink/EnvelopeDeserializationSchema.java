package riverflink;

import java.io.IOException;
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
 * to the dead-letter topic with their original bytes and source offset.
 */
public class EnvelopeDeserializationSchema implements KafkaRecordDeserializationSchema<String> {
    private static final long serialVersionUID = 1L;

    @Override
    public void deserialize(ConsumerRecord<byte[], byte[]> record, Collector<String> out) throws IOException {
        Base64.Encoder b64 = Base64.getEncoder();
        byte[] key = record.key();
        byte[] value = record.value();
        out.collect(record.partition() + ":" + record.offset() + ":" + record.timestamp() + ":"
                + (key == null ? "" : b64.encodeToString(key)) + ":"
                + (value == null ? "" : b64.encodeToString(value)));
    }

    @Override
    public TypeInformation<String> getProducedType() {
        return Types.STRING;
    }
}
