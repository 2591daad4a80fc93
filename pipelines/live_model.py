"""``LiveModel``: the newest merged model, in-process, for applications that skip the Kafka round trip.

    from riverflink import LiveModel

    with LiveModel("127.0.0.1:9092", "fraud") as live:
        live.wait(timeout=30)                  # until a first version arrives
        proba = live.predict_proba_one({"amount": 12.5})
        print(live.version, live.age_ms)

A background thread follows the ``models`` topic (from its beginning, without a
consumer group) and keeps the newest *accepted* version as a live River
object: documents are validated exactly as the jobs validate them
(:func:`riverflink.operators.model_feed.accept`: schema, allow-list, finite
values, a version no later than now + ``max_skew_ms``), and only a version
newer than the one held replaces it, so stale, duplicate, forged-far-future
or broken documents are ignored (``ignored`` counts them).  With
``verify_key`` (a PEM file, see :mod:`riverflink.models.signing`) only
documents signed by its private half are accepted; ``verified`` tells.

Predictions are River's own ``predict_one`` / ``predict_proba_one`` on that
object: the swap is one attribute assignment, so a prediction never sees a
half-updated model, and costs what River's call costs.

A recommender (``BiasedMF``, ``FunkMF``) answers with :meth:`LiveModel.rate` and
:meth:`LiveModel.rank`.  Its documents hold the item side alone; with
``users=True`` the thread also follows ``<topic>.users`` (each user's newest
factors, published by the replica that owns the user, validated as the serving
job validates them), and a user it holds none for is answered as serving
answers an unknown user (the global mean plus the item's bias; counted in
``unknown_users``)::

    with LiveModel("127.0.0.1:9092", "films", users=True) as live:
        live.wait(timeout=30)
        live.rate("u17", "i4"), live.rank("u17", ["i4", "i9", "i12"], n=2)
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from riverflink.operators.model_feed import FeedRules, ModelFeed

log = logging.getLogger("riverflink")


class NoModelYet(LookupError):
    """Raised by a prediction before any version of the model has arrived."""


class LiveModel:
    def __init__(self, bootstrap_servers: str, model_name: str, *, topic: str = "models",
                 max_skew_ms: int = 60_000, verify_key: str | None = None, start: bool = True, users: bool = False,
                 user_field: str = "user"):
        from riverflink.models.signing import Verifier

        #: a recommender's users' factors (``users=True``): user -> UserFactors, and the answers without any
        self.users: dict | None = {} if users else None
        self.user_field = user_field
        self.unknown_users = 0
        self._users_reader = None
        self.bootstrap_servers, self.model_name, self.topic = bootstrap_servers, model_name, topic
        self.rules = FeedRules(model_name, max_skew_ms, verifier=Verifier.load(verify_key) if verify_key else None,
                               serving=True)
        #: (version, created_at, River model) of the newest accepted version, swapped as a whole
        self._current: tuple[int, float, Any] | None = None
        #: whole documents, or a sharded model's slices and manifests, assembled (operators.model_feed)
        self._feed = ModelFeed(self.rules)
        self._entry = None
        self.ignored = 0
        self._stop = threading.Event()
        self._arrived = threading.Event()
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        if start:
            self.start()

    # -- lifecycle ------------------------------------------------------------------
    def start(self) -> "LiveModel":
        from riverflink.pipelines import kafka_io

        self._reader = kafka_io.TopicReader(self.bootstrap_servers, self.topic)
        if self.users is not None:
            self._users_reader = kafka_io.TopicReader(self.bootstrap_servers, f"{self.topic}.users")
        self._thread = threading.Thread(target=self._follow, name=f"riverflink-live-{self.model_name}", daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._reader.close()
        if self._users_reader is not None:
            self._users_reader.close()

    def __enter__(self) -> "LiveModel":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until a first version is held (``True``) or ``timeout`` seconds pass (``False``)."""
        return self._arrived.wait(timeout)

    def _follow(self) -> None:
        while not self._stop.is_set():
            try:
                for value in self._reader.poll(200):
                    self.offer(value)
                if self._users_reader is not None:
                    for value in self._users_reader.poll(0):
                        self.offer_user(value)
                self._error = None
            except Exception as e:  # noqa: BLE001 - keep serving the last good model; report on access
                self._error = e
                log.warning("LiveModel %s: reading %s failed: %s", self.model_name, self.topic, e)
                time.sleep(1.0)

    def offer(self, value: bytes | str) -> bool:
        """Consider one record of the models topic; ``True`` if it became the held version."""
        entry, model, problem = self._feed.offer(value, self._entry)
        if entry is None:
            if problem:
                self.ignored += 1
                log.warning("LiveModel %s ignored a record: %s", self.model_name, problem)
            return False
        self._entry = entry
        self._current = (entry.version, entry.meta.created_at or 0.0, model)
        self._arrived.set()
        return True

    def offer_user(self, value: bytes | None) -> bool:
        """Consider one record of ``<topic>.users``; ``True`` if it was taken (its user's newest factors, or an
        eviction record, which forgets the user)."""
        from riverflink.models.user_factors import read_user_record

        model = self._current[2] if self._current is not None else None
        factors = read_user_record(value, self.model_name, getattr(model, "n_factors", None), self.user_field,
                                   self.rules.verifier)
        if isinstance(factors, str):
            self.ignored += 1
            log.warning("LiveModel %s ignored a user-factor record: %s", self.model_name, factors)
            return False
        if factors.evicted:  # (its owner evicted it: answered as unknown again)
            self.users.pop(factors.user, None)
        else:
            self.users[factors.user] = factors
        return True

    @property
    def last_error(self) -> BaseException | None:
        """The last error reading the topic (the held version keeps answering meanwhile), or ``None``."""
        return self._error

    # -- the model ------------------------------------------------------------------
    @property
    def verified(self) -> bool:
        """True when every held version was checked against a verify key."""
        return self.rules.verifier is not None

    @property
    def version(self) -> int | None:
        c = self._current
        return None if c is None else c[0]

    @property
    def meta(self):
        """The held version's :class:`~riverflink.models.document.ModelMeta` (an assembled sharded model's lists
        its slices), or ``None`` before the first."""
        return None if self._entry is None else self._entry.meta

    @property
    def age_ms(self) -> float | None:
        """Milliseconds since the merger created the held version."""
        c = self._current
        return None if c is None else 1000.0 * (time.time() - c[1])

    @property
    def model(self) -> Any:
        c = self._current
        if c is None:
            raise NoModelYet(f"no version of model {self.model_name!r} has arrived on {self.topic!r} yet")
        return c[2]

    def predict_one(self, x: dict) -> Any:
        return self.model.predict_one(x)

    def predict_proba_one(self, x: dict) -> dict:
        return self.model.predict_proba_one(x)

    def rate(self, user: Any, item: Any) -> float:
        """A recommender's score for ``user`` and ``item``, as the serving job answers it."""
        from riverflink.models.matrix_factorization import serve_score

        return serve_score(self.model, self._user(user), item)

    def rank(self, user: Any, items: list, n: int | None = None) -> list[tuple[Any, float]]:
        """``items`` scored for ``user`` (:meth:`rate`), best first, the ``n`` best (default: all)."""
        from riverflink.models.matrix_factorization import rank

        return rank(self.model, self._user(user), items, n)

    def _user(self, user: Any):
        factors = self.users.get(user) if self.users is not None else None
        if factors is None:
            self.unknown_users += 1
        return factors
