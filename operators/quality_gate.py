"""The merger's quality gate: hold back merged versions that learn worse than the one being served.  Pure Python.

Evidence comes from the replicas' progressive metric, which every update
carries (``update.loss`` over ``update.events``: error rate for classifiers,
MAE for regressors), measured by a model based on ``update.base_version``.
Updates based on the served version or older measure the *served* quality;
updates based on newer versions measure the *candidates*.  Both are
exponentially weighted by events (``half_life``), so old evidence fades.

* The first version is served: there is nothing to compare it with.
* A newer version is served once the candidates' evidence holds at least
  ``min_events`` events and their loss is within ``margin`` of the served
  loss: classifiers in absolute error rate (0.02: two points of accuracy),
  regressors relative to the served MAE (0.2: 20% higher).  Until then it is
  published **held**: replicas rebase onto it and keep learning, serving
  keeps the previous version.  A version held while the evidence says
  *worse* is counted in ``held_back`` (the merger logs it).
* When a version is served, the candidates' evidence becomes the served
  baseline.

Anchors: Alink's model filter (a new model must pass a metric threshold
before it replaces the served one) and Ekko's rollback of degraded models.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Evidence:
    """An event-weighted moving average of a loss."""

    half_life: int
    loss: float = 0.0
    events: float = 0.0

    def add(self, loss: float, events: int) -> None:
        keep = 0.5 ** (events / self.half_life)
        total = self.events * keep + events
        self.loss = (self.loss * self.events * keep + loss * events) / total
        self.events = total


@dataclass
class QualityGate:
    """Decides, per merged version, whether it is served or held (see the module docstring).

    >>> gate = QualityGate(margin=0.02, regression=False, min_events=100)
    >>> gate.decide(1)                                  # the first version is served
    >>> gate.observe(loss=0.10, events=200, base_version=1)
    >>> gate.decide(2)                                  # no evidence about version 2 yet
    'pending: 0 of 100 events of evidence'
    >>> gate.observe(loss=0.30, events=200, base_version=2)
    >>> gate.decide(3)[:36]
    'worse: error 0.300 vs served 0.100 ('
    >>> gate.observe(loss=0.10, events=2000, base_version=3)
    >>> gate.decide(4), gate.served_version, gate.held_back
    (None, 4, 1)
    """

    margin: float
    regression: bool
    min_events: int = 500
    half_life: int = 2000
    served_version: int = 0
    served: Evidence = field(default=None)  # type: ignore[assignment]
    candidates: Evidence = field(default=None)  # type: ignore[assignment]
    #: versions held because their evidence was worse than the served version's
    held_back: int = 0

    def __post_init__(self) -> None:
        if not self.margin >= 0:
            raise ValueError(f"quality gate margin must be >= 0, got {self.margin}")
        self.served = self.served or Evidence(self.half_life)
        self.candidates = self.candidates or Evidence(self.half_life)

    def observe(self, loss: float | None, events: int, base_version: int) -> None:
        """One update's progressive loss over its ``events``, measured on a model based on ``base_version``."""
        if loss is None or events <= 0 or loss != loss:
            return
        (self.served if base_version <= self.served_version else self.candidates).add(loss, events)

    def limit(self) -> float:
        """The highest candidate loss that still serves."""
        if self.regression:
            return self.served.loss * (1.0 + self.margin)
        return self.served.loss + self.margin

    def decide(self, version: int) -> str | None:
        """``None``: serve ``version`` (it becomes the served version); else why it is held."""
        if self.served_version == 0 or self.served.events == 0:
            return self._serve(version)
        if self.candidates.events < self.min_events:
            return f"pending: {self.candidates.events:.0f} of {self.min_events} events of evidence"
        if self.candidates.loss <= self.limit():
            return self._serve(version)
        self.held_back += 1
        name = "MAE" if self.regression else "error"
        return (f"worse: {name} {self.candidates.loss:.3f} vs served {self.served.loss:.3f} "
                f"(version {self.served_version}, margin {self.margin:g})")

    def _serve(self, version: int) -> None:
        self.served_version = version
        if self.candidates.events:
            self.served = self.candidates
        self.candidates = Evidence(self.half_life)
        return None
