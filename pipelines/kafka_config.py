"""Kafka client properties for every client riverflink makes: the jobs' sources and sinks, and the CLI's
admin, producer and consumer clients.

Properties are Kafka's own names (``security.protocol``, ``sasl.mechanism``, ``sasl.jaas.config``,
``ssl.truststore.location``...), read, later ones winning, from:

1. the file ``$RIVERFLINK_KAFKA_CONFIG`` names (Java properties, the Kafka tools' convention);
2. ``--kafka-config FILE`` (replaces the environment's file);
3. ``--kafka-property KEY=VALUE``, repeatable, one key at a time.

The Flink jobs pass them to the Java clients unchanged.  The CLI's Python clients (kafka-python)
take the ones it understands, renamed (``security.protocol`` -> ``security_protocol``; a PLAIN or
SCRAM ``sasl.jaas.config`` -> ``sasl_plain_username`` / ``sasl_plain_password``; PEM trust and key
stores -> ``ssl_cafile`` / ``ssl_certfile`` / ``ssl_keyfile``); the rest are Java-only and skipped
there.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from riverflink.pipelines.config import ConfigError
from riverflink.pipelines.options import option

ENV = "RIVERFLINK_KAFKA_CONFIG"

#: Java property -> kafka-python setting, where the names differ by more than dots
_PYTHON_NAMES = {
    "ssl.truststore.location": "ssl_cafile",
    "ssl.keystore.location": "ssl_certfile",
    "ssl.key.location": "ssl_keyfile",
    "ssl.key.password": "ssl_password",
}
#: kafka-python settings a property may set (the rest of Kafka's names only mean something to Java)
_PYTHON_SETTINGS = {
    "client_id", "security_protocol", "sasl_mechanism", "sasl_plain_username", "sasl_plain_password",
    "sasl_kerberos_service_name", "ssl_cafile", "ssl_certfile", "ssl_keyfile", "ssl_password", "ssl_check_hostname",
    "request_timeout_ms", "metadata_max_age_ms", "connections_max_idle_ms", "receive_buffer_bytes",
    "send_buffer_bytes", "reconnect_backoff_ms", "retry_backoff_ms",
}
_INT_SETTINGS = {s for s in _PYTHON_SETTINGS if s.endswith(("_ms", "_bytes"))}


def read_properties(path: str | Path) -> dict[str, str]:
    """A Java properties file: ``key=value`` or ``key: value`` lines, ``#`` / ``!`` comments, ``\\`` continuations.

    >>> import tempfile
    >>> f = tempfile.NamedTemporaryFile("w", suffix=".properties", delete=False)
    >>> _ = f.write("# SASL\\nsecurity.protocol=SASL_SSL\\nsasl.jaas.config = a \\\\\\n  b;\\n")
    >>> f.close()
    >>> read_properties(f.name)
    {'security.protocol': 'SASL_SSL', 'sasl.jaas.config': 'a b;'}
    """
    try:
        text = Path(path).read_text()
    except OSError as e:
        raise ConfigError(f"Kafka config {path}: {e.strerror or e}") from None
    props, pending = {}, ""
    for raw in text.splitlines():
        line = pending + raw.strip() if pending else raw.strip()
        if line.endswith("\\"):
            pending = line[:-1]
            continue
        pending = ""
        if not line or line[0] in "#!":
            continue
        m = re.match(r"([^=:\s]+)\s*[=:]\s*(.*)$", line)
        if not m:
            raise ConfigError(f"Kafka config {path}: not a key=value line: {line[:80]!r}")
        props[m.group(1)] = m.group(2)
    return props


@dataclass(frozen=True)
class KafkaProperties:
    """Kafka client properties, in order; ``as_dict()`` for the Java clients, ``for_python()`` for kafka-python.

    >>> p = KafkaProperties.load(None, ["security.protocol=SASL_PLAINTEXT", "sasl.mechanism=PLAIN",
    ...     'sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required '
    ...     'username="alice" password="s3cret";'], environ={})
    >>> sorted(p.for_python().items())  # doctest: +NORMALIZE_WHITESPACE
    [('sasl_mechanism', 'PLAIN'), ('sasl_plain_password', 's3cret'), ('sasl_plain_username', 'alice'),
     ('security_protocol', 'SASL_PLAINTEXT')]
    """

    items: tuple[tuple[str, str], ...] = ()

    @classmethod
    def load(cls, file: str | None, overrides: Sequence[str] = (), environ: dict | None = None) -> "KafkaProperties":
        """From ``file`` (else ``$RIVERFLINK_KAFKA_CONFIG``), then ``KEY=VALUE`` ``overrides``."""
        environ = os.environ if environ is None else environ
        path = file or environ.get(ENV)
        props = read_properties(path) if path else {}
        for o in overrides:
            key, sep, value = o.partition("=")
            if not sep or not key.strip():
                raise ConfigError(f"--kafka-property must be KEY=VALUE, got {o!r}")
            props[key.strip()] = value.strip()
        if "bootstrap.servers" in props:
            raise ConfigError("give the brokers with --bootstrap-servers, not bootstrap.servers in the Kafka config")
        return cls(tuple(props.items()))

    def as_dict(self) -> dict[str, str]:
        return dict(self.items)

    @property
    def tls(self) -> bool:
        return self.as_dict().get("security.protocol", "PLAINTEXT").upper() in ("SSL", "SASL_SSL")

    def for_python(self) -> dict:
        """The kafka-python settings these properties amount to (Java-only ones left out)."""
        out: dict = {}
        for key, value in self.items:
            if key == "sasl.jaas.config":
                for field_, setting in (("username", "sasl_plain_username"), ("password", "sasl_plain_password")):
                    m = re.search(rf'{field_}\s*=\s*"([^"]*)"', value)
                    if m:
                        out[setting] = m.group(1)
                continue
            if key == "ssl.endpoint.identification.algorithm":
                out["ssl_check_hostname"] = value.strip().lower() == "https"
                continue
            name = _PYTHON_NAMES.get(key, key.replace(".", "_"))
            if name == "sasl_mechanism":
                value = value.upper()  # kafka-python knows PLAIN, SCRAM-SHA-256/512 in capitals only
            if name in _PYTHON_SETTINGS:
                out[name] = int(value) if name in _INT_SETTINGS else value
        return out


@dataclass(frozen=True)
class KafkaSettings:
    """How a job talks to Kafka beyond the bootstrap servers: client properties and topic creation."""

    #: from --kafka-config and --kafka-property (the CLI configures the process once)
    properties: KafkaProperties = KafkaProperties()
    replication_factor: int = option(-1, "of the topics riverflink creates (default: the broker's "
                                     "default.replication.factor)")
    create_topics: bool = option(True, "create no topic (for clusters where clients may not): they must exist",
                                 flag="--no-create-topics", negate=True)

    def validate(self) -> None:
        if self.replication_factor == 0 or self.replication_factor < -1:
            raise ConfigError(f"--replication-factor must be >= 1, got {self.replication_factor}")


_current = KafkaProperties()


def configure(properties: KafkaProperties) -> None:
    """Set the properties every kafka-python client of this process uses (the CLI does, once)."""
    global _current
    _current = properties


def current() -> KafkaProperties:
    return _current
