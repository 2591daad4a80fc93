"""Kafka sources and sinks for PyFlink jobs."""

from __future__ import annotations

from pyflink.common import WatermarkStrategy
from pyflink.common.serialization import SimpleStringSchema
from pyflink.datastream.connectors.base import DeliveryGuarantee
from pyflink.datastream.connectors.kafka import (
    KafkaOffsetResetStrategy,
    KafkaOffsetsInitializer,
    KafkaRecordSerializationSchema,
    KafkaSink,
    KafkaSource,
)
from pyflink.java_gateway import get_gateway

from riverflink.operators.limits import DEFAULT_LIMITS, Limits
from riverflink.pipelines import jars
from riverflink.pipelines.kafka_config import KafkaProperties

#: the sources' Kafka settings (a ``--kafka-property`` overrides any of them)
_CLIENT_PROPS = {
    # fail fast (one readable error) instead of retrying an unreachable broker forever
    "request.timeout.ms": "15000",
    "default.api.timeout.ms": "20000",
    "session.timeout.ms": "10000",
    "heartbeat.interval.ms": "1000",
    "fetch.max.wait.ms": "100",
    # a source never creates the topic it reads: on a broker that had lost its topics, the job's consumers
    # created them with the broker's default partition count (4 on Tansu) before they were made again with 2,
    # and the partitions the job did not know of were never read (the broker-restart test's lost events)
    "allow.auto.create.topics": "false",
    # partitions added to a topic are read within 10 s (the connector's default is 5 minutes)
    "partition.discovery.interval.ms": "10000",
}


def frame_source(env, servers: str, topic: str, group_id: str, name: str, limits: Limits = DEFAULT_LIMITS,
                 properties: KafkaProperties = KafkaProperties(), partition_mark: int = 0, earliest: bool = False):
    """The stream of :func:`frame_kafka_source`, named ``name``."""
    source = frame_kafka_source(servers, topic, group_id, limits, properties, partition_mark, earliest)
    return env.from_source(source, WatermarkStrategy.no_watermarks(), name)


def frame_kafka_source(servers: str, topic: str, group_id: str, limits: Limits = DEFAULT_LIMITS,
                       properties: KafkaProperties = KafkaProperties(), partition_mark: int = 0,
                       earliest: bool = False) -> KafkaSource:
    """Every record of ``topic`` as a binary record frame (partition, offset, timestamp, key, value; see
    ``RecordFrameDeserializationSchema.java`` and :func:`riverflink.operators.frames.open_frames`).

    ``properties``: Kafka client properties (SASL, TLS...), over riverflink's own defaults.

    Starts from the group's committed offsets, else the earliest.  A value over
    ``limits.max_event_bytes`` is cut to its dead-letter prefix at the source.
    Without riverflink's jar, falls back to the plain value text (no offsets).  ``partition_mark`` < 0: every
    frame carries it in place of its partition (a second topic merged into a stream of events; needs the jar).
    ``earliest``: a job without restored state starts from the earliest offsets, whatever the group committed,
    and commits nothing (a restored job resumes from its state's positions, as always).
    """
    builder = _committed_or_earliest(servers, topic, group_id, properties)
    if earliest:
        builder = (builder.set_starting_offsets(KafkaOffsetsInitializer.earliest())
                   .set_property("commit.offsets.on.checkpoint", "false"))
    if jars.operators_jar() is not None:
        builder._j_builder.setDeserializer(get_gateway().jvm.riverflink.RecordFrameDeserializationSchema(
            limits.max_event_bytes, limits.dead_letter_prefix, partition_mark))
    elif partition_mark < 0:
        raise ValueError("serving a recommender's users needs riverflink's operators jar (make builds it; it needs "
                         "javac)")
    else:
        builder.set_value_only_deserializer(SimpleStringSchema())
    return _rewinding(builder.build())


def pull_answer_source(env, servers: str, topic: str, group_id: str, replicas: int, max_bytes: int,
                       properties: KafkaProperties = KafkaProperties()):
    """The ``pulls`` topic as ``Row(replica, one record frame at PULL_PARTITION)`` (``PullAnswerDeserializationSchema``
    in riverflink's jar, which the caller checks for), for the replicas' keyed input.  Starts from the group's
    committed offsets, else the earliest (a new job's replicas take no earlier job's answer: their request ids)."""
    from riverflink.operators.flink_state import PULL_ROWS

    if jars.operators_jar() is None:
        raise ValueError("--working-set needs riverflink's operators jar (make builds it; it needs javac)")
    builder = _committed_or_earliest(servers, topic, group_id, properties)
    builder._j_builder.setDeserializer(get_gateway().jvm.riverflink.PullAnswerDeserializationSchema(replicas, max_bytes))
    return env.from_source(_rewinding(builder.build()), WatermarkStrategy.no_watermarks(), "pulls", type_info=PULL_ROWS)


def _committed_or_earliest(servers: str, topic: str, group_id: str, properties: KafkaProperties):
    """A ``KafkaSource`` builder for ``topic`` that starts from the group's committed offsets, else the earliest,
    and commits them at checkpoints (the caller sets the deserializer)."""
    return (
        KafkaSource.builder()
        .set_bootstrap_servers(servers)
        .set_topics(topic)
        .set_group_id(group_id)
        .set_starting_offsets(KafkaOffsetsInitializer.committed_offsets(KafkaOffsetResetStrategy.EARLIEST))
        .set_properties({**_CLIENT_PROPS, **properties.as_dict()})
        .set_property("commit.offsets.on.checkpoint", "true")
    )


#: how often a source compares its positions with the log ends
REWIND_CHECK_MS = 5000


def _rewinding(source: KafkaSource) -> KafkaSource:
    """``source`` as a ``RewindingKafkaSource`` (pipelines/java): a partition whose position lies beyond its
    log end, because the broker lost or truncated the log, restarts from the earliest offset instead of
    waiting for the new log to reach the old position.  Unchanged without the riverflink jar."""
    if jars.operators_jar() is None:
        return source
    jvm = get_gateway().jvm
    return KafkaSource(jvm.org.apache.flink.connector.kafka.source.RewindingKafkaSource.of(
        source.get_java_function(), REWIND_CHECK_MS))


def text_source(env, servers: str, topic: str, group_id: str, name: str,
                properties: KafkaProperties = KafkaProperties(), tail: int | None = None):
    """The stream of :func:`text_kafka_source`, named ``name``."""
    return env.from_source(text_kafka_source(servers, topic, group_id, properties, tail),
                           WatermarkStrategy.no_watermarks(), name)


def text_kafka_source(servers: str, topic: str, group_id: str, properties: KafkaProperties = KafkaProperties(),
                      tail: int | None = None) -> KafkaSource:
    """Every value of ``topic`` as text (used for ``models``): from the earliest offset, or with ``tail``
    from each partition's ``tail`` newest records (where they begin when the job is built; a job restored
    from a checkpoint or savepoint resumes where it was instead)."""
    if tail is None:
        start = KafkaOffsetsInitializer.earliest()
    else:
        from pyflink.datastream.connectors.kafka import KafkaTopicPartition

        from riverflink.pipelines import kafka_io

        start = KafkaOffsetsInitializer.offsets(
            {KafkaTopicPartition(topic, p): o for p, o in kafka_io.tail_offsets(servers, topic, tail).items()})
    source = (
        KafkaSource.builder()
        .set_bootstrap_servers(servers)
        .set_topics(topic)
        .set_group_id(group_id)
        .set_starting_offsets(start)
        .set_value_only_deserializer(SimpleStringSchema())
        .set_properties({**_CLIENT_PROPS, **properties.as_dict()})
        .build()
    )
    return _rewinding(source)


def text_sink(servers: str, topic: str, compression: str = "none", properties: KafkaProperties = KafkaProperties(),
              key: str | None = None, keyed_lines: bool = False) -> KafkaSink:
    """At-least-once string sink: consumers dedupe by id / model version.

    ``compression``: the producer's ``compression.type`` (model documents go
    out gzip-compressed, which every Kafka client reads without extras).
    ``properties``: Kafka client properties, over riverflink's defaults.
    ``key``: the same record key on every record (the model name on ``models``, so that a
    compacted topic keeps each model's newest document).
    ``keyed_lines``: each record is ``"<key>\n<value>"`` and carries its own key (a sharded model's slices and
    manifests); needs riverflink's jar.
    """
    serializer = KafkaRecordSerializationSchema.builder().set_topic(topic)
    if keyed_lines:
        from pyflink.common.serialization import SerializationSchema

        line = get_gateway().jvm.riverflink.KeyedLineSchema
        serializer = (serializer.set_value_serialization_schema(SerializationSchema(line(False)))
                      .set_key_serialization_schema(SerializationSchema(line(True))))
    else:
        serializer = serializer.set_value_serialization_schema(SimpleStringSchema())
    if key is not None and not keyed_lines and jars.operators_jar() is not None:  # without the jar: unkeyed
        serializer = serializer.set_key_serialization_schema(_constant_key(key))
    builder = (
        KafkaSink.builder()
        .set_bootstrap_servers(servers)
        .set_record_serializer(serializer.build())
        .set_delivery_guarantee(DeliveryGuarantee.AT_LEAST_ONCE)
    )
    # idempotence off: at-least-once is the contract (consumers dedupe), and an idempotent producer whose broker
    # forgot its producer id (the embedded broker restarted; on Kafka, producer state expired) was answered
    # UNKNOWN_PRODUCER_ID on its partitions for good by Tansu: those partitions' records never arrived
    defaults = {"linger.ms": "5", "request.timeout.ms": "15000", "delivery.timeout.ms": "30000",
                "compression.type": compression, "enable.idempotence": "false"}
    for k, v in {**defaults, **properties.as_dict()}.items():
        builder = builder.set_property(k, v)
    return builder.build()


def _constant_key(key: str):
    """A key serializer that gives every record the key ``key`` (riverflink.ConstantKeySchema)."""
    from pyflink.common.serialization import SerializationSchema

    return SerializationSchema(get_gateway().jvm.riverflink.ConstantKeySchema(key))
