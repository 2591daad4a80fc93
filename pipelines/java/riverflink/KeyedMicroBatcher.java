package riverflink;

import java.nio.ByteBuffer;
import java.nio.charset.StandardCharsets;
import java.util.Arrays;
import java.util.zip.CRC32;

import org.apache.flink.api.common.operators.ProcessingTimeService.ProcessingTimeCallback;
import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.core.JsonFactory;
import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.core.JsonParser;
import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.core.JsonToken;
import org.apache.flink.streaming.api.operators.AbstractStreamOperator;
import org.apache.flink.streaming.api.operators.OneInputStreamOperator;
import org.apache.flink.streaming.runtime.streamrecord.StreamRecord;
import org.apache.flink.types.Row;

/**
 * Keys record frames ({@link RecordFrameDeserializationSchema}) by replica and micro-batches them
 * <em>before</em> the shuffle, chained to the Kafka source: per event it only finds the replica key
 * and appends the frame to that key's buffer, so serialization, the network and PyFlink's Python
 * operator each pay once per batch. Emits {@code Row(key, frames)}, for a {@code keyBy} on field 0.
 *
 * <p>The replica key is crc32 of the event's key field, else of the Kafka record key, else of its
 * {@code "id"}, else of {@code "partition:offset"}, modulo {@code keys}; the event is scanned with
 * Jackson's streaming parser (nested values skipped, numbers never converted). Malformed events get
 * a key like any other and are dead-lettered in Python.
 *
 * <p>A key's batch is emitted when it holds {@code maxRecords} frames or {@code maxBytes}, or
 * {@code maxMillis} after its first frame; every batch is emitted before a checkpoint barrier
 * ({@link #prepareSnapshotPreBarrier}) and at the end of input, so the operator holds no state: after
 * a failure the source replays what was buffered. Flink chains it to the source (operator factories
 * chain by default).
 */
public class KeyedMicroBatcher extends AbstractStreamOperator<Row>
        implements OneInputStreamOperator<byte[], Row>, ProcessingTimeCallback {
    private static final long serialVersionUID = 1L;
    private static final JsonFactory JSON = new JsonFactory();
    private final int keys;
    private final String keyField;
    private final int maxRecords;
    private final int maxBytes;
    private final long maxMillis;
    private final boolean rotate;
    private transient byte[][] buffers;
    private transient int[] sizes;
    private transient int[] counts;
    private transient long[] firstAt;
    private transient boolean timerPending;
    private transient int nextKey;

    /**
     * @param keyField the event field that picks the replica; {@code null}: records are not keyed by
     *                 content but share one buffer, and each batch gets the next key in turn (for
     *                 stateless operators such as serving, where keys only spread the load; batches are
     *                 then as large as the traffic allows)
     */
    public KeyedMicroBatcher(int keys, String keyField, int maxRecords, int maxBytes, long maxMillis) {
        this.rotate = keyField == null;
        this.keys = keys;
        this.keyField = keyField;
        this.maxRecords = maxRecords;
        this.maxBytes = maxBytes;
        this.maxMillis = maxMillis;
    }

    @Override
    public void open() throws Exception {
        super.open();
        buffers = new byte[keys][];
        sizes = new int[keys];
        counts = new int[keys];
        firstAt = new long[keys];
    }

    @Override
    public void processElement(StreamRecord<byte[]> element) throws Exception {
        byte[] frame = element.getValue();
        int key = rotate ? 0 : replicaKey(frame, keys, keyField);
        if (buffers[key] == null) {
            buffers[key] = new byte[Math.max(4096, frame.length * 2)];
        }
        if (sizes[key] + frame.length > buffers[key].length) {
            buffers[key] = Arrays.copyOf(buffers[key], Math.max(sizes[key] + frame.length, 2 * buffers[key].length));
        }
        System.arraycopy(frame, 0, buffers[key], sizes[key], frame.length);
        sizes[key] += frame.length;
        if (counts[key]++ == 0) {
            firstAt[key] = getProcessingTimeService().getCurrentProcessingTime();
            if (!timerPending) {
                timerPending = true;
                getProcessingTimeService().registerTimer(firstAt[key] + maxMillis, this);
            }
        }
        if (counts[key] >= maxRecords || sizes[key] >= maxBytes) {
            flush(key);
        }
    }

    @Override
    public void onProcessingTime(long time) throws Exception {
        timerPending = false;
        long next = Long.MAX_VALUE;
        for (int k = 0; k < keys; k++) {
            if (counts[k] == 0) {
                continue;
            }
            if (firstAt[k] + maxMillis <= time) {
                flush(k);
            } else {
                next = Math.min(next, firstAt[k] + maxMillis);
            }
        }
        if (next != Long.MAX_VALUE) {
            timerPending = true;
            getProcessingTimeService().registerTimer(next, this);
        }
    }

    @Override
    public void prepareSnapshotPreBarrier(long checkpointId) throws Exception {
        flushAll();
    }

    @Override
    public void finish() throws Exception {
        flushAll();
        super.finish();
    }

    private void flushAll() {
        for (int k = 0; k < keys; k++) {
            flush(k);
        }
    }

    private void flush(int key) {
        if (counts[key] == 0) {
            return;
        }
        byte[] batch = Arrays.copyOf(buffers[key], sizes[key]);
        if (buffers[key].length > 4 * Math.max(4096, batch.length)) {
            buffers[key] = null; // do not keep a buffer an oversized batch grew
        }
        sizes[key] = 0;
        counts[key] = 0;
        int emitAs = key;
        if (rotate) {
            emitAs = nextKey;
            nextKey = (nextKey + 1) % keys;
        }
        output.collect(new StreamRecord<>(Row.of(emitAs, batch)));
    }

    /** The replica key of one frame (see the class comment); never throws. */
    public static int replicaKey(byte[] frame, int keys, String keyField) {
        String token = null;
        try {
            ByteBuffer b = ByteBuffer.wrap(frame);
            int partition = b.getInt(0);
            long offset = b.getLong(4);
            int keyLength = b.getInt(20);
            int valueLength = b.getInt(24);
            long whole = b.getLong(28);
            int at = RecordFrameDeserializationSchema.HEADER + (whole >= 0 ? RecordFrameDeserializationSchema.DIGEST : 0);
            String recordKey = keyLength > 0 ? new String(frame, at, keyLength, StandardCharsets.UTF_8) : null;
            at += Math.max(0, keyLength);
            String[] found = valueLength > 0 ? scan(frame, at, valueLength, keyField) : new String[2];
            token = found[0] != null ? found[0]
                    : recordKey != null ? recordKey
                    : found[1] != null ? found[1]
                    : partition + ":" + offset;
        } catch (RuntimeException e) {
            token = null;
        }
        CRC32 crc = new CRC32();
        if (token != null) {
            crc.update(token.getBytes(StandardCharsets.UTF_8));
        } else {
            crc.update(frame, 0, Math.min(frame.length, 64));
        }
        return (int) (crc.getValue() % keys);
    }

    /**
     * {@code [text of top-level keyField, text of top-level "id"]} of a JSON object (null where absent,
     * null-valued or the document is not an object). Nested values are skipped; a container's text
     * is "" (like Jackson's {@code asText}). A malformed document yields what was found before the
     * error, unless nothing was.
     */
    static String[] scan(byte[] bytes, int offset, int length, String keyField) {
        String[] found = new String[2];
        try (JsonParser p = JSON.createParser(bytes, offset, length)) {
            if (p.nextToken() != JsonToken.START_OBJECT) {
                return found;
            }
            JsonToken t;
            while ((t = p.nextToken()) == JsonToken.FIELD_NAME) {
                String name = p.currentName();
                JsonToken v = p.nextToken();
                int slot = keyField != null && keyField.equals(name) ? 0 : "id".equals(name) ? 1 : -1;
                if (v == JsonToken.START_OBJECT || v == JsonToken.START_ARRAY) {
                    p.skipChildren();
                    if (slot >= 0) {
                        found[slot] = "";
                    }
                } else if (slot >= 0 && v != JsonToken.VALUE_NULL) {
                    found[slot] = p.getText();
                }
                if (slot == 0 && found[0] != null) {
                    return found; // the key field decides; nothing later matters
                }
            }
        } catch (Exception | StackOverflowError e) {
            // malformed: keep what was found; the Python parser dead-letters the event
        }
        return found;
    }
}
