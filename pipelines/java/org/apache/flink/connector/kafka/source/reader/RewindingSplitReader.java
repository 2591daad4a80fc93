package org.apache.flink.connector.kafka.source.reader;

import java.io.IOException;
import java.lang.reflect.Field;
import java.time.Duration;
import java.util.Collections;
import java.util.HashMap;
import java.util.HashSet;
import java.util.Map;
import java.util.Properties;
import java.util.Set;

import org.apache.flink.api.connector.source.SourceReaderContext;
import org.apache.flink.connector.base.source.reader.RecordsWithSplitIds;
import org.apache.flink.connector.kafka.source.metrics.KafkaSourceReaderMetrics;
import org.apache.flink.connector.kafka.source.split.KafkaPartitionSplit;
import org.apache.flink.metrics.Counter;
import org.apache.kafka.clients.Metadata;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.Uuid;
import org.apache.kafka.common.serialization.ByteArrayDeserializer;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * The connector's split reader, restarting a partition from its earliest offset (with a warning and
 * one count on {@code rewinds}) when the broker lost or replaced its log.  See {@code RewindingKafkaSource}.
 *
 * <p><b>A topic that was created again</b> (an in-memory broker restarted, a topic deleted and made
 * anew) has a new topic id.  Every fetch compares each assigned topic's id in the consumer's metadata
 * with the one it had, and on a change rewinds the topic's partitions.  The consumer may have read the
 * new log at its old position before its metadata showed the new id (seen with Tansu); what it emitted
 * then comes again after the rewind, and {@link ReadHistory} skips it (same offset, same fingerprint),
 * so every record of the new log is emitted once, however far the new log had grown past the old
 * position.  What the rewinding fetch itself returned for those partitions is dropped (read again).
 *
 * <p><b>A log truncated in place</b> (same topic id) is found by a check every {@code checkMs}: a
 * partition whose position lies beyond its log end restarts from the earliest offset.
 *
 * <p><b>A partition that stopped moving</b>: the same check seeks a partition to its own position again
 * (a warning and one count on {@code stalls}) when a whole interval of polls left it where it was although
 * the log reaches beyond it.  After an embedded-broker restart a consumer was seen at its old offset 150
 * for seconds while the new log reached 340, every poll empty; the seek set it going again.
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
    private final Counter stalls;
    private long lastCheck = System.currentTimeMillis();
    /** partition -> its position at the last check, where that position lay beyond the log end */
    private final Map<TopicPartition, Long> beyond = new HashMap<>();
    /** partition -> its position at the last check */
    private final Map<TopicPartition, Long> positions = new HashMap<>();

    private final Properties probeProps = new Properties();
    private KafkaConsumer<byte[], byte[]> probe;
    /** what the task thread emitted lately, so that a rewound partition emits nothing twice */
    private final ReadHistory history;
    /** split ids rewound during the current fetch: that fetch's records of them are dropped */
    private Set<String> rewoundNow = new HashSet<>();
    /** topic -> the id it had when last seen */
    private final Map<String, Uuid> topicIds = new HashMap<>();
    private Metadata metadata;
    private boolean metadataLookedUp;
    /** whether the last log-end check failed (logged once per run of failures) */
    private boolean checkFailing;

    public RewindingSplitReader(Properties props, SourceReaderContext context, KafkaSourceReaderMetrics metrics,
                                String rackId, long checkMs, Counter rewinds, Counter stalls, Counter repeats) {
        super(props, context, metrics, rackId);
        this.history = new ReadHistory(repeats);
        this.checkMs = checkMs;
        this.rewinds = rewinds;
        this.stalls = stalls;
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
        rewoundNow.add(KafkaPartitionSplit.toSplitId(tp));
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
        rewindReplacedTopics();
        long now = System.currentTimeMillis();
        if (now - lastCheck >= checkMs) {
            lastCheck = now;
            rewindPastTheEnd();
        }
        Set<String> rewound = rewoundNow;
        rewoundNow = new HashSet<>();
        return history.filter(records, rewound);
    }

    /** The consumer's metadata (the topic ids it knows), found once by reflection; null if not found. */
    private Metadata metadata() {
        if (!metadataLookedUp) {
            metadataLookedUp = true;
            try {
                Field delegate = KafkaConsumer.class.getDeclaredField("delegate");
                delegate.setAccessible(true);
                Object inner = delegate.get(consumer());
                for (Class<?> c = inner.getClass(); c != null && metadata == null; c = c.getSuperclass()) {
                    for (Field f : c.getDeclaredFields()) {
                        if (Metadata.class.isAssignableFrom(f.getType())) {
                            f.setAccessible(true);
                            metadata = (Metadata) f.get(inner);
                            break;
                        }
                    }
                }
            } catch (ReflectiveOperationException | RuntimeException e) {
                LOG.warn("riverflink: cannot read the Kafka consumer's topic ids ({}); a topic created again is "
                        + "found by the log-end check only", e.toString());
            }
        }
        return metadata;
    }

    /** Rewinds every assigned partition of a topic whose id changed since it was last seen. */
    private void rewindReplacedTopics() {
        Metadata meta = metadata();
        if (meta == null) {
            return;
        }
        KafkaConsumer<byte[], byte[]> consumer = consumer();
        Map<String, Uuid> now = meta.topicIds();
        Set<TopicPartition> assigned = consumer.assignment();
        for (TopicPartition tp : assigned) {
            Uuid id = now.get(tp.topic());
            Uuid was = topicIds.get(tp.topic());
            if (id != null && !Uuid.ZERO_UUID.equals(id) && was != null && !was.equals(id)) {
                rewind(consumer, tp, "belongs to a topic created again (id " + was + " is now " + id + ")");
            }
        }
        for (TopicPartition tp : assigned) {
            Uuid id = now.get(tp.topic());
            if (id != null && !Uuid.ZERO_UUID.equals(id)) {
                topicIds.put(tp.topic(), id);  // a topic missing from the metadata (for now) keeps the id it had
            }
        }
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
                if (last != null && position == last && end != null && position < end) {
                    // polled for a whole check interval without moving although records lie beyond the position
                    LOG.warn("riverflink: {} has not moved from offset {} in {} ms although the log reaches {}; "
                            + "fetching from there again", tp, position, checkMs, end);
                    consumer.seek(tp, position);
                    stalls.inc();
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
            if (checkFailing) {
                LOG.info("riverflink: log-end checks succeed again");
            }
            checkFailing = false;
        } catch (RuntimeException e) {
            // a broker that is away, or a wake-up: the next check tries again
            if (!checkFailing) {
                LOG.warn("riverflink: log-end check failed ({}); trying again every {} ms", e.toString(), checkMs);
            }
            checkFailing = true;
        }
    }
}
