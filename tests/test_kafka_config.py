"""Kafka client properties reach every client: the CLI's kafka-python clients and the jobs' Flink sources and
sinks (read back from the Java objects), with the file, environment and per-key precedence."""

from __future__ import annotations

import pytest

from riverflink.pipelines import kafka_config, kafka_io
from riverflink.pipelines.config import ConfigError
from riverflink.pipelines.kafka_config import ENV, KafkaProperties


def test_file_environment_and_overrides_in_that_order(tmp_path):
    env_file, cli_file = tmp_path / "env.properties", tmp_path / "cli.properties"
    env_file.write_text("client.id=from-env\nsecurity.protocol=SASL_SSL\n")
    cli_file.write_text("# comment\nclient.id = from-file\n")
    assert KafkaProperties.load(None, [], {ENV: str(env_file)}).as_dict() == {
        "client.id": "from-env", "security.protocol": "SASL_SSL"}
    # --kafka-config replaces the environment's file; --kafka-property wins over both
    assert KafkaProperties.load(str(cli_file), ["client.id=from-flag"], {ENV: str(env_file)}).as_dict() == {
        "client.id": "from-flag"}
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        KafkaProperties.load(None, ["oops"], {})
    with pytest.raises(ConfigError, match="--bootstrap-servers"):
        KafkaProperties.load(None, ["bootstrap.servers=127.0.0.1:9092"], {})
    (tmp_path / "bad.properties").write_text("just words\n")
    with pytest.raises(ConfigError, match="not a key=value line"):
        KafkaProperties.load(str(tmp_path / "bad.properties"), [], {})


def test_tls_and_scram_settings_for_python_clients():
    p = KafkaProperties.load(None, [
        "security.protocol=SASL_SSL", "sasl.mechanism=scram-sha-512",
        'sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username="u" '
        'password="p w";', "ssl.truststore.type=PEM", "ssl.truststore.location=/etc/ca.pem",
        "ssl.endpoint.identification.algorithm=", "linger.ms=7"], {})
    assert p.tls
    assert p.for_python() == {"security_protocol": "SASL_SSL", "sasl_mechanism": "SCRAM-SHA-512",
                              "sasl_plain_username": "u", "sasl_plain_password": "p w",
                              "ssl_cafile": "/etc/ca.pem", "ssl_check_hostname": False}


@pytest.mark.integration
def test_properties_reach_the_cli_clients(kafka_bootstrap):
    kafka_io.create_topics(kafka_bootstrap, {"kafka-config-probe": 1})
    kafka_config.configure(KafkaProperties.load(None, ["client.id=rf-probe", "request.timeout.ms=31000"], {}))
    try:
        clients = [kafka_io.admin(kafka_bootstrap), kafka_io.producer(kafka_bootstrap),
                   kafka_io.TopicReader(kafka_bootstrap, "kafka-config-probe").consumer]
        for c in clients:
            assert c.config["client_id"] == "rf-probe" and c.config["request_timeout_ms"] == 31000, type(c)
            c.close()
    finally:
        kafka_config.configure(KafkaProperties())


@pytest.mark.integration
def test_properties_reach_the_jobs_sources_and_sinks():
    from riverflink.pipelines import flink_kafka
    from riverflink.pipelines.config import FlinkConfig
    from riverflink.pipelines.flink_runtime import make_env

    make_env(FlinkConfig(), "kafka-config-probe")  # starts the JVM with riverflink's jars
    props = KafkaProperties.load(None, ["security.protocol=SASL_PLAINTEXT", "sasl.mechanism=PLAIN",
                                        "client.rack=rack-7"], {})
    sources = [flink_kafka.frame_kafka_source("127.0.0.1:9", "t", "g", properties=props),
               flink_kafka.text_kafka_source("127.0.0.1:9", "t", "g", props)]
    sink = flink_kafka.text_sink("127.0.0.1:9", "t", properties=props, key="model-a")

    def java_properties(obj, cls_name: str, field_name: str) -> dict:
        cls = obj.getClass()
        while cls.getName() != cls_name:  # the connector's classes live in the job's class loader
            cls = cls.getSuperclass()
        field = cls.getDeclaredField(field_name)
        field.setAccessible(True)
        return {k: field.get(obj).getProperty(k) for k in field.get(obj).stringPropertyNames()}

    for s in sources:
        got = java_properties(s.get_java_function(), "org.apache.flink.connector.kafka.source.KafkaSource", "props")
        assert {k: got.get(k) for k in props.as_dict()} == props.as_dict()
        assert got["request.timeout.ms"] == "15000"  # riverflink's own defaults stay under the user's
    got = java_properties(sink.get_java_function(), "org.apache.flink.connector.kafka.sink.KafkaSink",
                          "kafkaProducerConfig")
    assert {k: got.get(k) for k in props.as_dict()} == props.as_dict()
