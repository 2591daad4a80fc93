package org.apache.flink.connector.kafka.source.reader;

import java.io.IOException;
import java.time.Duration;
import java.util.Collections;
import java.util.HashMap;
import java.util.Map;
import java.util.Properties;
import java.util.Set;

import org.apache.flink.api.connector.source.SourceReaderContext;
import org.apache.flink.connector.base.source.reader.RecordsWithSplitIds;
import org.apache.flink.connector.kafka.source.metrics.KafkaSourceReaderMetrics;
import org.apache.flink.metrics.Counter;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.serialization.ByteArrayDeserializer;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * The connector's split reader, plus a check every {@code checkMs}: a partition whose position lies
 * beyond its log end (the broker lost or truncated the log) restarts from the earliest offset, with a
 * warning and one count on {@code rewinds}.  See {@code RewindingKafkaSource}.
 *
 * <p>A reported log end is not enough: Tansu 0.6 reports the last batch's base offset plus one, so a
 * reader that has read a batch of many records is "beyond the end" of a healthy log.  A partition
 * beyond its reported end is therefore probed with a side consumer (no group): if the record just
 * before its position can be read, the log is intact.  It is rewound only when two checks in a row,
 * at the same position, find that record gone.
 *
 * <p>A position that moved back between two checks without this reader seeking is the consumer's own
 * reaction to a truncated log (Kafka's leader-epoch validation resets to the divergence point, which on
 * a broker that reports a wrong log end skips records): that partition is rewound at once.
 */
public class RewindingSplitReader extends KafkaPartitionSplitReader {
    private static final Logger LOG = LoggerFactory.getLogger(RewindingSplitReader.class);
    private final long checkMs;
    private final Counter rewinds;
    private long lastCheck = System.currentTimeMillis();
    /** partition -> its position at the last check, where that position lay beyond the log end */
    private final Map<TopicPartition, Long> beyond = new HashMap<>();
    /** partition -> its position at the last check */
    private final Map<TopicPartition, Long> positions = new HashMap<>();

    private final Properties probeProps = new Properties();
    private KafkaConsumer<byte[], byte[]> probe;

    public RewindingSplitReader(Properties props, SourceReaderContext context, KafkaSourceReaderMetrics metrics,
                                String rackId, long checkMs, Counter rewinds) {
        super(props, context, metrics, rackId);
        this.checkMs = checkMs;
        this.rewinds = rewinds;
        probeProps.putAll(props);
        probeProps.remove("group.id");
        probeProps.put("enable.auto.commit", "false");
        probeProps.put("client.id", props.getProperty("client.id", "riverflink") + "-log-end-probe");
        probeProps.put("key.deserializer", ByteArrayDeserializer.class.getName());
        probeProps.put("value.deserializer", ByteArrayDeserializer.class.getName());
    }

    /** Whether the record at {@code offset} (or a later one) of {@code tp} can still be read. */
    private boolean readable(TopicPartition tp, long offset) {
        if (probe == null) {
            probe = new KafkaConsumer<>(probeProps);
        }
        probe.assign(Collections.singleton(tp));
        probe.seek(tp, offset);
        long deadline = System.currentTimeMillis() + 2000;
        while (System.currentTimeMillis() < deadline) {
            if (!probe.poll(Duration.ofMillis(200)).records(tp).isEmpty()) {
                return true;
            }
        }
        return false;
    }

    private void rewind(KafkaConsumer<byte[], byte[]> consumer, TopicPartition tp, String why) {
        LOG.warn("riverflink: {} {}: the broker lost or truncated the log; restarting the partition from its "
                + "earliest offset", tp, why);
        consumer.seekToBeginning(Collections.singleton(tp));
        positions.remove(tp);
        beyond.remove(tp);
        rewinds.inc();
    }

    @Override
    public void close() throws Exception {
        try {
            super.close();
        } finally {
            if (probe != null) {
                probe.close(Duration.ofSeconds(1));
            }
        }
    }

    @Override
    public RecordsWithSplitIds<ConsumerRecord<byte[], byte[]>> fetch() throws IOException {
        RecordsWithSplitIds<ConsumerRecord<byte[], byte[]>> records = super.fetch();
        long now = System.currentTimeMillis();
        if (now - lastCheck >= checkMs) {
            lastCheck = now;
            rewindPastTheEnd();
        }
        return records;
    }

    private void rewindPastTheEnd() {
        KafkaConsumer<byte[], byte[]> consumer = consumer();
        try {
            Set<TopicPartition> assigned = consumer.assignment();
            if (assigned.isEmpty()) {
                return;
            }
            Map<TopicPartition, Long> ends = consumer.endOffsets(assigned, Duration.ofSeconds(5));
            Map<TopicPartition, Long> previous = new HashMap<>(beyond);
            beyond.clear();
            Map<TopicPartition, Long> before = new HashMap<>(positions);
            positions.clear();
            for (TopicPartition tp : assigned) {
                Long end = ends.get(tp);
                long position = consumer.position(tp, Duration.ofSeconds(5));
                positions.put(tp, position);
                Long last = before.get(tp);
                if (last != null && position < last) {
                    rewind(consumer, tp, "moved back from offset " + last + " to " + position + " by itself");
                    continue;
                }
                if (end == null || position <= end || position == 0 || readable(tp, position - 1)) {
                    continue;
                }
                if (!Long.valueOf(position).equals(previous.get(tp))) {
                    beyond.put(tp, position);  // gone for the first time: look again at the next check
                } else {
                    rewind(consumer, tp, "is at offset " + position + ", beyond the log end " + end);
                }
            }
        } catch (RuntimeException e) {
            // a broker that is away, or a wake-up: the next check tries again
            LOG.debug("riverflink: log-end check skipped: {}", e.toString());
        }
    }
}
