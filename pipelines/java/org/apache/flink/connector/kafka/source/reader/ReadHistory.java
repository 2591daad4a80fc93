package org.apache.flink.connector.kafka.source.reader;

import java.util.HashMap;
import java.util.Map;
import java.util.Set;

import org.apache.flink.connector.base.source.reader.RecordsWithSplitIds;
import org.apache.flink.metrics.Counter;
import org.apache.kafka.clients.consumer.ConsumerRecord;

/**
 * What a source reader emitted lately, per partition, so that a partition rewound to its new log's start
 * emits nothing twice.  Used by {@link RewindingSplitReader}; everything here runs in the task thread,
 * which consumes the fetches in order.
 *
 * <p>A consumer whose topic was created again may read the new log at its old position before it learns
 * the new topic id (seen with Tansu: records 150 onwards of a new log, then the rewind to 0).  After the
 * rewind those records come again, at the same offsets with the same contents.  Each partition keeps the
 * offset and a fingerprint (timestamp, size, a hash of the value's first 256 bytes) of its last
 * {@link #WINDOW} emitted records; from the rewind on, a record whose offset and fingerprint match a kept
 * one is skipped (counted on {@code repeats}), until the offsets pass the last kept one.  A record of the
 * old log at the same offset has another fingerprint, and is not skipped.
 */
final class ReadHistory {
    /** records remembered per partition */
    static final int WINDOW = 1 << 15;

    private final Map<String, Partition> partitions = new HashMap<>();
    private final Counter repeats;

    ReadHistory(Counter repeats) {
        this.repeats = repeats;
    }

    /** {@code records} as the task thread should see them: {@code rewound} splits' records of this fetch
     *  are dropped (they are read again after the rewind), and every later record already emitted is skipped. */
    RecordsWithSplitIds<ConsumerRecord<byte[], byte[]>> filter(
            RecordsWithSplitIds<ConsumerRecord<byte[], byte[]>> records, Set<String> rewound) {
        return new Filtered(records, rewound);
    }

    static long fingerprint(ConsumerRecord<byte[], byte[]> record) {
        long h = record.timestamp() * 31 + record.serializedValueSize();
        byte[] value = record.value();
        if (value != null) {
            for (int i = 0, n = Math.min(value.length, 256); i < n; i++) {
                h = h * 31 + value[i];
            }
        }
        return h;
    }

    private static final class Partition {
        private final long[] offsets = new long[WINDOW];
        private final long[] prints = new long[WINDOW];
        private int next;
        private int size;
        /** offset -> fingerprint of what was emitted before the last rewind; null when none is pending */
        private Map<Long, Long> before;
        private long beforeUntil;

        void remember(long offset, long print) {
            offsets[next] = offset;
            prints[next] = print;
            next = (next + 1) % WINDOW;
            size = Math.min(size + 1, WINDOW);
        }

        void rewound() {
            before = new HashMap<>(size * 2);
            beforeUntil = Long.MIN_VALUE;
            for (int i = 0; i < size; i++) {
                before.put(offsets[i], prints[i]);
                beforeUntil = Math.max(beforeUntil, offsets[i]);
            }
            next = 0;
            size = 0;
        }

        boolean emittedBefore(long offset, long print) {
            if (before == null) {
                return false;
            }
            if (offset > beforeUntil) {
                before = null;
                return false;
            }
            Long p = before.get(offset);
            return p != null && p == print;
        }
    }

    private final class Filtered implements RecordsWithSplitIds<ConsumerRecord<byte[], byte[]>> {
        private final RecordsWithSplitIds<ConsumerRecord<byte[], byte[]>> records;
        private final Set<String> rewound;
        private boolean started;
        private boolean dropping;
        private Partition partition;

        Filtered(RecordsWithSplitIds<ConsumerRecord<byte[], byte[]>> records, Set<String> rewound) {
            this.records = records;
            this.rewound = rewound;
        }

        @Override
        public String nextSplit() {
            if (!started) {
                started = true;  // every earlier fetch has been emitted: what they emitted is the history
                for (String split : rewound) {
                    partitions.computeIfAbsent(split, s -> new Partition()).rewound();
                }
            }
            String split = records.nextSplit();
            dropping = split != null && rewound.contains(split);
            partition = split == null ? null : partitions.computeIfAbsent(split, s -> new Partition());
            return split;
        }

        @Override
        public ConsumerRecord<byte[], byte[]> nextRecordFromSplit() {
            ConsumerRecord<byte[], byte[]> record;
            while ((record = records.nextRecordFromSplit()) != null) {
                if (dropping) {
                    continue;
                }
                long print = fingerprint(record);
                if (partition.emittedBefore(record.offset(), print)) {
                    repeats.inc();
                    continue;
                }
                partition.remember(record.offset(), print);
                return record;
            }
            return null;
        }

        @Override
        public Set<String> finishedSplits() {
            Set<String> finished = records.finishedSplits();
            finished.forEach(partitions::remove);
            return finished;
        }

        @Override
        public void recycle() {
            records.recycle();
        }
    }
}
