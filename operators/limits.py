"""What one event may hold; anything beyond is dead-lettered with the limit it broke.  Pure Python."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Limits:
    """What one event may hold; anything beyond is dead-lettered with the limit it broke.

    ``max_abs_value`` bounds every feature (and a regression label): the
    default, 1e9, keeps squares and sums of squares (variances, norms) far
    from overflow, so no single event can turn a replica's statistics into
    inf; values within the bound are learned as data.  Nesting is bounded by
    the JSON parser itself (orjson: 1024 levels) and features must be flat
    numbers.
    """

    # a field with a "help" is also a flag of `riverflink train` (riverflink.pipelines.options)
    max_event_bytes: int = field(default=1 << 20, metadata={"help": "larger events are dead-lettered"})
    max_features: int = field(default=1000, metadata={"help": "events with more features are dead-lettered"})
    max_abs_value: float = field(default=1e9, metadata={"help": "events with a feature beyond +-this are "
                                                                "dead-lettered"})
    max_id_chars: int = 200
    #: bytes of the raw record kept in a dead letter (with the full length and a SHA-256)
    dead_letter_prefix: int = 4096

    def __post_init__(self) -> None:
        for name in ("max_event_bytes", "max_features", "max_id_chars", "dead_letter_prefix"):
            if getattr(self, name) < 1:
                raise ValueError(f"limit {name} must be >= 1, got {getattr(self, name)}")
        if not self.max_abs_value > 0:
            raise ValueError(f"limit max_abs_value must be > 0, got {self.max_abs_value}")


DEFAULT_LIMITS = Limits()
