package riverflink;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.security.MessageDigest;
import java.security.NoSuchAlgorithmException;

import org.apache.flink.api.common.typeinfo.PrimitiveArrayTypeInfo;
import org.apache.flink.api.common.typeinfo.TypeInformation;
import org.apache.flink.connector.kafka.source.reader.deserializer.KafkaRecordDeserializationSchema;
import org.apache.flink.util.Collector;
import org.apache.kafka.clients.consumer.ConsumerRecord;

/**
 * Wraps every Kafka record, whatever its bytes, into one binary <em>frame</em> (big-endian):
 *
 * <pre>
 *   int32 partition | int64 offset | int64 timestamp | int32 key length (-1: no key)
 *   | int32 value length (-1: no value) | int64 whole length (-1: not cut) | [32 bytes SHA-256, if cut]
 *   | key bytes | value bytes
 * </pre>
 *
 * <p>Frames concatenate without separators ({@link KeyedMicroBatcher}), and Python reads them back with
 * {@code riverflink.operators.parse.open_frames}. Nothing is re-encoded: the value's bytes reach
 * Python as they were on the topic, so malformed events are dead-lettered with their original bytes
 * and source offset. It never throws on content.
 *
 * <p>A value longer than {@code maxValueBytes} (a record the parser rejects anyway) is cut here to
 * its first {@code keepBytes}, and the frame carries the whole value's length and SHA-256: an
 * oversized record then costs no room in a batch, and its dead letter still names its true size
 * and digest.
 *
 * <p>With a negative {@code partitionMark}, every frame carries that number in place of its partition: the
 * records of a second topic merged into a stream of events or requests (a recommender's user factors, at
 * Python's {@code USER_PARTITION}) are then told apart from them whatever their bytes, since no Kafka
 * partition is negative.
 */
public class RecordFrameDeserializationSchema implements KafkaRecordDeserializationSchema<byte[]> {
    private static final long serialVersionUID = 1L;
    /** Bytes of a frame before its digest, key and value. */
    public static final int HEADER = 4 + 8 + 8 + 4 + 4 + 8;
    public static final int DIGEST = 32;
    private final int maxValueBytes;
    private final int keepBytes;
    private final int partitionMark;

    public RecordFrameDeserializationSchema(int maxValueBytes, int keepBytes) {
        this(maxValueBytes, keepBytes, 0);
    }

    public RecordFrameDeserializationSchema(int maxValueBytes, int keepBytes, int partitionMark) {
        this.maxValueBytes = maxValueBytes;
        this.keepBytes = Math.min(keepBytes, maxValueBytes);
        this.partitionMark = partitionMark;
    }

    @Override
    public void deserialize(ConsumerRecord<byte[], byte[]> record, Collector<byte[]> out) throws IOException {
        byte[] key = record.key();
        byte[] value = record.value();
        byte[] digest = null;
        long whole = -1;
        int valueLength = value == null ? -1 : value.length;
        if (value != null && value.length > maxValueBytes) {
            whole = value.length;
            digest = sha256(value);
            valueLength = keepBytes;
        }
        out.collect(frame(partitionMark < 0 ? partitionMark : record.partition(), record.offset(), record.timestamp(), key, value, valueLength, whole,
                digest));
    }

    /** One frame (see the class comment): {@code value}'s first {@code valueLength} bytes, and {@code whole} and
     * {@code digest} when it was cut ({@code -1} and {@code null} otherwise). */
    public static byte[] frame(int partition, long offset, long timestamp, byte[] key, byte[] value, int valueLength,
                               long whole, byte[] digest) {
        int size = HEADER + (digest == null ? 0 : DIGEST) + (key == null ? 0 : key.length) + Math.max(0, valueLength);
        ByteBuffer frame = ByteBuffer.allocate(size);
        frame.putInt(partition).putLong(offset).putLong(timestamp)
                .putInt(key == null ? -1 : key.length).putInt(valueLength).putLong(whole);
        if (digest != null) {
            frame.put(digest);
        }
        if (key != null) {
            frame.put(key);
        }
        if (value != null) {
            frame.put(value, 0, valueLength);
        }
        return frame.array();
    }

    private static byte[] sha256(byte[] bytes) {
        try {
            return MessageDigest.getInstance("SHA-256").digest(bytes);
        } catch (NoSuchAlgorithmException e) {
            return new byte[DIGEST];
        }
    }

    @Override
    public TypeInformation<byte[]> getProducedType() {
        return PrimitiveArrayTypeInfo.BYTE_PRIMITIVE_ARRAY_TYPE_INFO;
    }
}
