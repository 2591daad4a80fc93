package org.apache.flink.connector.kafka.source;

import java.lang.reflect.Field;
import java.util.Properties;
import java.util.function.Supplier;

import org.apache.flink.api.common.serialization.DeserializationSchema;
import org.apache.flink.api.connector.source.SourceReader;
import org.apache.flink.api.connector.source.SourceReaderContext;
import org.apache.flink.connector.base.source.reader.RecordsWithSplitIds;
import org.apache.flink.connector.base.source.reader.splitreader.SplitReader;
import org.apache.flink.connector.base.source.reader.synchronization.FutureCompletingBlockingQueue;
import org.apache.flink.connector.kafka.source.enumerator.initializer.OffsetsInitializer;
import org.apache.flink.connector.kafka.source.enumerator.subscriber.KafkaSubscriber;
import org.apache.flink.connector.kafka.source.metrics.KafkaSourceReaderMetrics;
import org.apache.flink.connector.kafka.source.reader.KafkaRecordEmitter;
import org.apache.flink.connector.kafka.source.reader.KafkaSourceReader;
import org.apache.flink.connector.kafka.source.reader.RewindingSplitReader;
import org.apache.flink.connector.kafka.source.reader.deserializer.KafkaRecordDeserializationSchema;
import org.apache.flink.connector.kafka.source.reader.fetcher.KafkaSourceFetcherManager;
import org.apache.flink.connector.kafka.source.split.KafkaPartitionSplit;
import org.apache.flink.metrics.Counter;
import org.apache.flink.metrics.MetricGroup;
import org.apache.flink.util.UserCodeClassLoader;
import org.apache.flink.util.function.SerializableSupplier;
import org.apache.kafka.clients.consumer.ConsumerRecord;

/**
 * A {@link KafkaSource} whose readers never wait silently past the end of a log.
 *
 * <p>A broker that loses or truncates a log (an in-memory broker restarted, a topic recreated)
 * leaves a restored position beyond the new log end.  Kafka answers such a fetch with
 * OFFSET_OUT_OF_RANGE and the consumer resets to {@code auto.offset.reset}; a broker that answers
 * with an empty fetch instead (Tansu 0.6) would keep the source waiting until the new log reaches
 * the old position, skipping every record before it.  The readers here ({@link RewindingSplitReader})
 * compare each assigned partition's position with its log end every {@code checkMs} and restart a
 * partition whose position lies beyond it from the earliest offset, with a warning and the counter
 * {@code riverflink.source_rewinds}.
 *
 * <p>Built from an ordinary {@link KafkaSource} ({@link #of}); everything else is the connector's.
 */
public class RewindingKafkaSource<OUT> extends KafkaSource<OUT> {
    private static final long serialVersionUID = 1L;
    private final KafkaRecordDeserializationSchema<OUT> deserializer;
    private final Properties properties;
    private final SerializableSupplier<String> rackId;
    private final long checkMs;

    private RewindingKafkaSource(KafkaSubscriber subscriber, OffsetsInitializer starting, OffsetsInitializer stopping,
                                 org.apache.flink.api.connector.source.Boundedness boundedness,
                                 KafkaRecordDeserializationSchema<OUT> deserializer, Properties properties,
                                 SerializableSupplier<String> rackId, long checkMs) {
        super(subscriber, starting, stopping, boundedness, deserializer, properties, rackId);
        this.deserializer = deserializer;
        this.properties = properties;
        this.rackId = rackId;
        this.checkMs = checkMs;
    }

    @SuppressWarnings("unchecked")
    public static <OUT> RewindingKafkaSource<OUT> of(KafkaSource<OUT> source, long checkMs) throws Exception {
        return new RewindingKafkaSource<>(source.getKafkaSubscriber(),
                (OffsetsInitializer) field(source, "startingOffsetsInitializer"), source.getStoppingOffsetsInitializer(),
                source.getBoundedness(), (KafkaRecordDeserializationSchema<OUT>) field(source, "deserializationSchema"),
                (Properties) field(source, "props"), (SerializableSupplier<String>) field(source, "rackIdSupplier"),
                checkMs);
    }

    private static Object field(KafkaSource<?> source, String name) throws Exception {
        Field f = KafkaSource.class.getDeclaredField(name);
        f.setAccessible(true);
        return f.get(source);
    }

    @Override
    public SourceReader<OUT, KafkaPartitionSplit> createReader(SourceReaderContext context) throws Exception {
        FutureCompletingBlockingQueue<RecordsWithSplitIds<ConsumerRecord<byte[], byte[]>>> queue =
                new FutureCompletingBlockingQueue<>();
        deserializer.open(new DeserializationSchema.InitializationContext() {
            @Override
            public MetricGroup getMetricGroup() {
                return context.metricGroup().addGroup("deserializer");
            }

            @Override
            public UserCodeClassLoader getUserCodeClassLoader() {
                return context.getUserCodeClassLoader();
            }
        });
        KafkaSourceReaderMetrics metrics = new KafkaSourceReaderMetrics(context.metricGroup());
        MetricGroup group = context.metricGroup().addGroup("riverflink");
        Counter rewinds = group.counter("source_rewinds");
        Counter stalls = group.counter("source_stalls");
        Counter repeats = group.counter("source_repeats_skipped");
        String rack = rackId == null ? null : rackId.get();
        Supplier<SplitReader<ConsumerRecord<byte[], byte[]>, KafkaPartitionSplit>> readers =
                () -> new RewindingSplitReader(properties, context, metrics, rack, checkMs, rewinds, stalls, repeats);
        return new KafkaSourceReader<>(queue, new KafkaSourceFetcherManager(queue, readers, ids -> { }),
                new KafkaRecordEmitter<>(deserializer), getConfiguration(), context, metrics);
    }
}
