package riverflink;

import java.io.IOException;
import java.nio.charset.StandardCharsets;

import org.apache.flink.api.common.typeinfo.PrimitiveArrayTypeInfo;
import org.apache.flink.api.common.typeinfo.TypeInformation;
import org.apache.flink.api.common.typeinfo.Types;
import org.apache.flink.api.common.serialization.DeserializationSchema;
import org.apache.flink.connector.kafka.source.reader.deserializer.KafkaRecordDeserializationSchema;
import org.apache.flink.metrics.Counter;
import org.apache.flink.types.Row;
import org.apache.flink.util.Collector;
import org.apache.kafka.clients.consumer.ConsumerRecord;

/**
 * Reads the {@code pulls} topic (the merger shards' answers to the replicas' pulls, {@code --working-set}) straight
 * into the replicas' keyed input: each record becomes {@code Row(replica, frame)}, its Kafka key (the replica's id,
 * a decimal number) as the key and its value in a record frame at partition {@link #PULL_PARTITION}, which no
 * event's frame can have (Kafka partitions are never negative), so the replica tells an answer from an event
 * whatever their bytes. A record whose key names no replica of the job (no replica asked for it), or one over the
 * size limit, is dropped and counted ({@code pull_answers_dropped}). No Python operator on the way: an answer's
 * only hops are the broker and the keyBy.
 */
public class PullAnswerDeserializationSchema implements KafkaRecordDeserializationSchema<Row> {
    private static final long serialVersionUID = 1L;
    /** Python's {@code riverflink.operators.pulls.PULL_PARTITION}. */
    public static final int PULL_PARTITION = -2;
    private final int replicas;
    private final int maxValueBytes;
    private transient Counter dropped;

    public PullAnswerDeserializationSchema(int replicas, int maxValueBytes) {
        this.replicas = replicas;
        this.maxValueBytes = maxValueBytes;
    }

    @Override
    public void open(DeserializationSchema.InitializationContext context) {
        dropped = context.getMetricGroup().addGroup("riverflink").counter("pull_answers_dropped");
    }

    @Override
    public void deserialize(ConsumerRecord<byte[], byte[]> record, Collector<Row> out) throws IOException {
        int replica = replicaOf(record.key(), replicas);
        byte[] value = record.value();
        if (replica < 0 || value == null || value.length > maxValueBytes) {
            if (dropped != null) {
                dropped.inc();
            }
            return;
        }
        out.collect(Row.of(replica, RecordFrameDeserializationSchema.frame(PULL_PARTITION, record.offset(),
                record.timestamp(), null, value, value.length, -1, null)));
    }

    /** The replica a key names: a decimal number in [0, replicas), else -1. */
    static int replicaOf(byte[] key, int replicas) {
        if (key == null || key.length == 0 || key.length > 9) {
            return -1;
        }
        String text = new String(key, StandardCharsets.US_ASCII);
        for (int i = 0; i < text.length(); i++) {
            if (text.charAt(i) < '0' || text.charAt(i) > '9') {
                return -1;
            }
        }
        int replica = Integer.parseInt(text);
        return replica < replicas ? replica : -1;
    }

    @Override
    public TypeInformation<Row> getProducedType() {
        return Types.ROW(Types.INT, PrimitiveArrayTypeInfo.BYTE_PRIMITIVE_ARRAY_TYPE_INFO);
    }
}
