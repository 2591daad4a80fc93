"""``Predictor``: the serving job's operator; answers every request with the newest accepted model.

Input: a micro-batch of request frames (``batched``) or one raw request;
output: one string of JSON prediction lines, one per request, each ``ok``
(with the model version and age), ``no_model_yet`` or ``bad_request`` (with
the reason).  Keys only spread the requests over subtasks (a recommender's
users aside, below).  Model documents are validated before they are stored
(:mod:`riverflink.operators.model_feed`).

A recommender (``BiasedMF``, ``FunkMF``) answers requests that name a ``user``
and an ``item`` (or a list of candidate ``items`` to rank, best first, the
top ``n``).  Its documents hold the item side alone; with ``users`` the
request batches are keyed by user and carry that user's factor records too
(frames at :data:`USER_PARTITION`, from ``<models>.users``), kept in keyed
``MapState``: a request is answered with its user's newest factors, and a
user with none as an unknown user (the global mean plus the item's bias;
metric ``answers_unknown_user``, and ``"known_user": false`` on the answer).
"""

from __future__ import annotations

import collections
import logging
import time

import orjson
from pyflink.datastream.functions import KeyedBroadcastProcessFunction, RuntimeContext
from river.utils import inspect as river_inspect

from riverflink.models.matrix_factorization import rank, serve_score
from riverflink.models.rating import Rating, is_recommender
from riverflink.models.signing import Verifier
from riverflink.models.user_factors import UserFactors, read_user_record
from riverflink.operators import sampling_profiler
from riverflink.operators.flink_state import LATEST_MODEL, USER_TABLE
from riverflink.operators.model_feed import FeedRules, ModelFeed, entry_model
from riverflink.operators.dead_letters import Rejected
from riverflink.operators.events import RatingFields, parse_event
from riverflink.operators.frames import USER_PARTITION, Record, records
from riverflink.operators.limits import DEFAULT_LIMITS, Limits
from riverflink.operators.records import prediction_record
from riverflink.operators.scoring import predict

log = logging.getLogger("riverflink")



class Predictor(KeyedBroadcastProcessFunction):
    #: Flink metrics, set by open() (None without a Flink runtime)
    m_answers: dict | None = None
    m_latency = None
    m_prediction_errors = None
    m_refused_models = None
    #: whether the current model is a classifier (River's inspection is too slow to repeat per request)
    classifier: bool | None = None

    #: whether the current model is a recommender (its requests name a user and items)
    recommender: bool = False
    m_unknown_users = None
    m_user_records = None
    m_user_records_refused = None
    #: the users' factors (keyed MapState: JSON id -> "[bias, vector]"), when users are joined
    users = None

    def __init__(self, model_name: str, batched: bool, limits: Limits = DEFAULT_LIMITS, max_skew_ms: int = 60_000,
                 verifier: Verifier | None = None, ratings: RatingFields | None = None, users: bool = False):
        """``ratings``: where a recommender's requests name the user and items; ``users``: the batches carry the
        users' factor records (keyed by user)."""
        self.name, self.batched, self.limits = model_name, batched, limits
        self.ratings, self.join_users = ratings or RatingFields(), users
        # (in place: a subtask answers with the newest version alone, and takes it before answering a batch)
        self.rules = FeedRules(model_name, max_skew_ms, verifier=verifier, serving=True, in_place=True)

    def open(self, ctx: RuntimeContext):
        sampling_profiler.start_if_asked()
        self.version, self.created_at, self.model = None, None, None
        self.accepted: dict = {}
        self.feed = ModelFeed(self.rules)  # whole documents, or a sharded model's slices and manifests
        group = ctx.get_metrics_group().add_group("riverflink")
        self.m_answers = {s: group.counter(f"answers_{s}") for s in ("ok", "bad_request", "no_model_yet")}
        self.m_prediction_errors = group.counter("prediction_errors")
        self.m_refused_models = group.counter("model_documents_refused")
        self.m_unknown_users = group.counter("answers_unknown_user")
        self.m_user_records = group.counter("user_records")
        self.m_user_records_refused = group.counter("user_records_refused")
        self.users = ctx.get_map_state(USER_TABLE) if self.join_users else None
        group.gauge("model_version_seconds", lambda: int((self.version or 0) // 1000))
        group.gauge("model_age_ms", lambda: int(1000 * (time.time() - self.created_at)) if self.created_at else 0)
        # request latency: from the request's Kafka timestamp to its answer leaving this operator
        self.m_latency = group.distribution("latency_ms")

    def process_element(self, value, ctx):
        entry = ctx.get_broadcast_state(LATEST_MODEL).get(self.name)
        if entry is not None and entry.version != self.version:
            self.version, self.created_at = entry.version, entry.meta.created_at
            built = self.accepted.pop(entry.version, None)  # the model accept() built, if this subtask saw it
            self.model = built if built is not None else entry_model(entry)
            self.classifier = river_inspect.isclassifier(self.model)  # once per version, not per request
            self.recommender = is_recommender(self.model)
        now_ms = int(time.time() * 1000)
        answers = []
        for record in records(value, self.batched):
            if record.partition == USER_PARTITION:
                self._take_user(record)
            else:
                answers.append(self._answer(record, now_ms))
        if not answers:
            return
        yield "\n".join(a for a, _ in answers)
        if self.m_answers is not None:  # one counter update per status and batch, not per request
            for status, n in collections.Counter(s for _, s in answers).items():
                self.m_answers[status].inc(n)

    def _answer(self, record: Record, now_ms: int = 0) -> tuple[str, str]:
        """``(prediction record, status)`` for one request."""
        event = parse_event(record, require_label=False, limits=self.limits,
                            ratings=self.ratings if self.recommender else None)
        if isinstance(event, Rejected) and self.model is None:  # (a recommender's request, before its model)
            as_rating = parse_event(record, require_label=False, limits=self.limits, ratings=self.ratings)
            event = event if isinstance(as_rating, Rejected) else as_rating
        if isinstance(event, Rejected):
            return prediction_record(source="serving", request_id=None, y_pred=None, proba=None,
                                     model_version=self.version, model_created_at=self.created_at,
                                     status="bad_request", reason=event.reason, offset=event.offset), "bad_request"
        if self.model is None:
            return prediction_record(source="serving", request_id=event.id, y_pred=None, proba=None,
                                     model_version=None, model_created_at=None, status="no_model_yet"), "no_model_yet"
        extra = {}
        try:
            if type(event.x) is Rating:
                (y_pred, extra), proba = self._rate(event.x), None
            else:
                y_pred, proba = predict(self.model, event.x, self.classifier)
        except Exception as e:  # noqa: BLE001 - one bad request must not kill the job
            # a valid request the model could not answer: the model's problem as much as the request's
            log.warning("model version %s could not answer request %r: %s: %s", self.version, event.id,
                        type(e).__name__, str(e)[:200])
            if self.m_prediction_errors is not None:
                self.m_prediction_errors.inc()
            return prediction_record(source="serving", request_id=event.id, y_pred=None, proba=None,
                                     model_version=self.version, model_created_at=self.created_at,
                                     status="bad_request", reason=f"{type(e).__name__}: {str(e)[:200]}"), "bad_request"
        if event.timestamp and self.m_latency is not None:
            self.m_latency.update(max(0, now_ms - event.timestamp))
        return prediction_record(source="serving", request_id=event.id, y_pred=y_pred, proba=proba,
                                 model_version=self.version, model_created_at=self.created_at, **extra), "ok"

    def _rate(self, x: Rating) -> tuple:
        """A recommender's answer: ``(score, extra fields)``, or for a list of candidates ``([[item, score], ...]
        best first, extra fields)``."""
        user = self._user(x.user)
        if user is None and self.m_unknown_users is not None:
            self.m_unknown_users.inc()
        extra = {} if user is not None else {"known_user": False}
        if isinstance(x.item, list):
            return [[i, s] for i, s in rank(self.model, user, x.item, x.top)], extra
        return serve_score(self.model, user, x.item), extra

    def _user(self, user) -> UserFactors | None:
        """The newest factors this subtask holds for ``user`` (``None``: none, or users are not joined)."""
        if self.users is None:
            return None
        text = self.users.get(orjson.dumps(user).decode())
        if text is None:
            return None
        bias, vector = orjson.loads(text)
        return UserFactors(user, bias, tuple(vector))

    def _take_user(self, record: Record) -> None:
        """Keep a user-factor record that passes validation (its user's newest; an eviction record removes the
        user), else count and log it."""
        n_factors = getattr(self.model, "n_factors", None) if self.recommender else None
        factors = read_user_record(record.value, self.name, n_factors, self.ratings.user, self.rules.verifier)
        if isinstance(factors, str):
            log.warning("ignoring a record on the users topic (offset %s): %s", record.offset, factors)
            if self.m_user_records_refused is not None:
                self.m_user_records_refused.inc()
            return
        if self.users is not None and factors.evicted:  # (its owner evicted it: the user is unknown again)
            self.users.remove(orjson.dumps(factors.user).decode())
        elif self.users is not None:
            self.users.put(orjson.dumps(factors.user).decode(), orjson.dumps([factors.bias, factors.vector]).decode())
            if self.m_user_records is not None:
                self.m_user_records.inc()

    def process_broadcast_element(self, value, ctx):
        state = ctx.get_broadcast_state(LATEST_MODEL)
        current = state.get(self.name)
        entry, model, problem = self.feed.offer(value, current)
        if problem:
            log.warning("ignoring a record on the models topic: %s", problem)
            if self.m_refused_models is not None:
                self.m_refused_models.inc()
        elif entry is not None:
            state.put(self.name, entry)
            self.accepted = {entry.version: model}
