"""Profiles updated from freshly posted events: validate -> store -> profile -> write.

The HTTP event routes of the Airflow plugin call ``update_from_events``; any other pusher of
events (a queue consumer, a script) can call it too. Each step reuses what the daily run uses:

* **Validate** with the loaders' own rules and the ``canonical`` mapping
  (``events.validate_columns``: the result of ``events.validate_events`` on the request's
  frame): every posted event is either stored or rejected with a reason of
  ``event_schema.REJECT_REASONS``, under its 1-based position in the request (``row_number``).
* **Store** with ``Store.ingest_events(few_rows=True)`` (one transaction; for a few customers
  ``Store.ingest_and_read_histories``, which reads their stored histories in the same round
  trip): a re-post adds nothing. The source names the request by its content
  (``request_source``), so a re-post of the same body also records its rejects only once, and
  an event repeated with other fields is a ``conflicting_duplicate``, as for files.
* **Durable before answered**, with one WAL flush per post instead of two: the ingest commits
  asynchronously (``synchronous_commit=False``: COMMIT does not wait for its WAL record to
  reach disk) and the profile write after it commits synchronously. PostgreSQL's WAL is one
  sequence and a flush covers everything before the flushed position, so when the write's
  commit returns, the ingest's commit record (earlier in the WAL) is on disk too. That holds
  only for a write that changed rows (PostgreSQL flushes at commit only for a transaction that
  has an id and wrote WAL; one that changed nothing flushes nothing), so every other way out
  (no promoted model, a stale model skipped, a write that changed nothing, no valid event, an
  exception) calls ``Store.flush_wal`` before returning or raising: nothing is answered before
  it is durable. In the few milliseconds between the two commits other sessions can already
  see the events; a server crash in that window loses them before anyone was told they were
  stored (the client gets an error and re-posts; a re-post adds nothing twice), and anything
  derived from them and committed (another post's profile, a daily run's) was flushed after
  them, so it cannot outlive them.
* **Profile** each affected customer from their whole stored history with the batch path's
  rules (the lookup, the weighted mean ``aggregate.weighted_means`` and the projection
  ``pipeline.profiles_from_embeddings``), as of the **end of the UTC day of their newest stored
  event**, with the model ``Store.model_version_for`` selects for that instant (asked once per
  date and process: later posts take the version the last write found selected for that date,
  ``SelectionHints``, which the write checks under its lock). That is exactly
  what the daily run for that day computes (interval ``[day, day + 1)``, ``as_of`` its end,
  events before it, the model of its date), so the daily run that follows rewrites the same
  values. An ``as_of`` of "now" would differ from it whenever recency weighting is on. A post of
  a few customers (``FEW_CUSTOMERS``) reads their histories as plain columns
  (``Store.customer_histories``) and resolves each event with the model's cached
  ``online.CustomerProfiler`` (dict look-ups: pandas and Arrow set-up cost more than a few dozen
  events); a post of more customers goes through the batch path's frames
  (``pipeline.profile_customers``).
* **Write** with ``Store.write_profiles(require_selected_model=True, few_rows=True)`` (one
  transaction per ``as_of``; the rows of a few customers go as query parameters, not staged): the
  history row of (customer, as_of) is replaced, the current row only moves forward, and a model
  promoted for that date meanwhile makes the batch be recomputed once with it, like the daily
  run (a recompute after an out-of-date hint does not count). When a refresh or promotion has
  put the customer's current row at a later ``as_of`` than the day of their newest event, the
  update rewrites that day's history row and the newer current row stays.
* **Models** come from the process's ``traitflow.model_cache`` (a saved version's arrays never
  change): a post reads the model from PostgreSQL, and builds its token lookup matrix
  (``item2vec.fallback_vectors``), its ``CustomerProfiler`` and its projection set-up
  (``traits.ProjectionSetup``), only the first time that version is used.
* **Concurrent posts** for one customer: events are stored before their profile is computed,
  and a post's write counts its customers' stored events in its transaction after writing,
  under the writers' lock (``write_profiles(count_events=True)``, not a second read of the
  history); the customers whose history grew meanwhile are profiled again (``MAX_ROUNDS`` times
  at most), so the last profile written for a customer includes every event stored before it
  was computed. An event committed after that count was stored after the write took the
  lock, so the post that stored it writes after this write, and its own count covers every
  event committed before it (also those its history read, made before its ingest committed,
  missed). The profile is computed before the write's transaction, which holds the writers'
  lock only for the few statements of the write.

The daily run with an input folder also leaves out events of files dated its end's day or later
(not delivered yet for it); events posted here are in the store at once, so a customer who also
has such file events is profiled with them here and without them by that daily run.

Without a promoted model for a customer's date the events are still stored (the first daily run
after a promotion profiles them) and the customer is listed in ``EventUpdate.unprofiled``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd

from traitflow import event_schema
from traitflow.aggregate import CustomerEmbeddings, weighted_means
from traitflow.events import PRESETS, validate_columns
from traitflow.model import TraitflowModel
from traitflow.model_cache import load_fallback, load_model, load_profiler, load_projection
from traitflow.online import CustomerProfiler
from traitflow.pipeline import profile_customers, profiles_from_embeddings
from traitflow.profile_batch import ProfileBatch, profile_confidence
from traitflow.profile_cache import profiles_changed, refreshes_rows
from traitflow.runs import utc
from traitflow.store import StaleModelError, Store
from traitflow.store.reads import CustomerHistories

log = logging.getLogger(__name__)

MAX_EVENTS = 10_000  # per request: validation, storage and profiling stay within a second or so
MAX_ROUNDS = 3  # profile writes per customer and request when concurrent posts keep adding events
# Up to this many customers a round reads plain columns and resolves events with dict look-ups;
# more go through the batch path's frames (vectorized: cheaper per event, dearer to set up).
FEW_CUSTOMERS = 100
_MICROS_PER_DAY = 86_400 * 1_000_000
SOURCE_PREFIX = "api:"
_DAY = timedelta(days=1)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_EVENT_FIELDS: tuple[str, ...] = event_schema.CANONICAL_COLUMNS


@dataclass(frozen=True)
class Reject:
    row_number: int  # 1-based position of the event in the request
    reason: str  # one of event_schema.REJECT_REASONS


@dataclass(frozen=True)
class UpdatedProfile:
    """A profile as written: ``scores`` in the model's trait order (``trait_ids``, ``labels``)."""

    customer_id: str
    as_of: datetime
    model_version: int
    trait_ids: tuple[int, ...]
    labels: tuple[str, ...]
    scores: tuple[float, ...]
    dominant_trait_id: int
    n_events: int
    n_known_tokens: int | None
    confidence: float | None
    cold_start: str


@dataclass(frozen=True)
class Unprofiled:
    customer_id: str
    as_of: datetime
    reason: str


@dataclass(frozen=True)
class EventUpdate:
    """What one post did: ``n_received = n_stored + n_rejected`` (``n_stored`` counts events new to
    the store and those already present from an earlier post)."""

    source: str
    n_received: int
    n_inserted: int
    n_already_present: int
    n_rejected: int
    rejects: tuple[Reject, ...]
    profiles: tuple[UpdatedProfile, ...]
    unprofiled: tuple[Unprofiled, ...]

    @property
    def n_stored(self) -> int:
        return self.n_inserted + self.n_already_present


class TooManyEventsError(ValueError):
    """More than ``MAX_EVENTS`` events in one request."""


def request_source(rows: Sequence[Mapping[str, Any]]) -> str:
    """``api:sha256:<hex>`` of the events' canonical JSON: the same body always gets the same
    source, so its rejects (keyed by source and row number) are recorded once."""
    canonical = json.dumps([dict(row) for row in rows], sort_keys=True, ensure_ascii=False, default=str)
    return f"{SOURCE_PREFIX}sha256:{hashlib.sha256(canonical.encode('utf-8', 'surrogatepass')).hexdigest()}"


def _text(value: Any) -> str:
    """A posted field as the text a file would hold: missing -> '', numbers in their JSON form."""
    if value is None:
        return ""
    if isinstance(value, float):
        return repr(value)
    return str(value)


def event_columns(rows: Sequence[Mapping[str, Any]]) -> dict[str, list[str]]:
    """The posted events as text columns, canonical name -> values (what the loaders validate)."""
    return {name: [_text(row.get(name)) for row in rows] for name in _EVENT_FIELDS}


def day_end(instant_us: int) -> datetime:
    """The end of the UTC day of ``instant_us`` (microseconds since the epoch): the ``as_of`` of
    the daily run whose interval holds it."""
    return _EPOCH + _DAY * (instant_us // _MICROS_PER_DAY + 1)  # floor: days before 1970 too


def update_from_events(store: Store, rows: Sequence[Mapping[str, Any]], *, run_id: str) -> EventUpdate:
    """Validate, store and profile posted events (see the module docstring).

    ``rows``: mappings with the canonical fields (``event_schema.CANONICAL_COLUMNS``; missing or
    None = blank); at most ``MAX_EVENTS`` (``TooManyEventsError``). ``run_id`` is recorded with
    the stored rows (who posted, when).
    """
    if len(rows) > MAX_EVENTS:
        raise TooManyEventsError(f"{len(rows)} events in one request; at most {MAX_EVENTS}")
    source = request_source(rows)
    result = validate_columns(event_columns(rows), PRESETS["canonical"], source=source)
    valid = result.event_rows  # the few rows of a usual post, as validated (no frame built)
    posted = valid.customer_id if valid is not None else result.events["customer_id"].to_numpy(dtype=object)
    customer_ids = np.unique(np.asarray(posted, dtype=object))
    histories: Histories | None = None
    if 0 < len(customer_ids) <= FEW_CUSTOMERS:  # their histories read in the ingest's round trip
        report, histories = store.ingest_and_read_histories(
            result, source, run_id, customer_ids.tolist(), synchronous_commit=False
        )
    else:
        report = store.ingest_events(result, source, run_id, few_rows=True, synchronous_commit=False)
    try:
        profiled, unprofiled, flushed = _update_profiles(store, customer_ids, histories)
    except BaseException:
        _flush_after_failure(store)
        raise
    if not flushed:
        store.flush_wal()
    return EventUpdate(
        source=source,
        n_received=report.n_read,
        n_inserted=report.n_inserted,
        n_already_present=report.n_already_present,
        n_rejected=report.n_rejected,
        rejects=_rejects(store, source, result.rejects, report.n_conflicting),
        profiles=tuple(profiled[c] for c in sorted(profiled)),
        unprofiled=tuple(unprofiled[c] for c in sorted(unprofiled)),
    )


def _flush_after_failure(store: Store) -> None:
    """``store.flush_wal()`` on the way out of a failed post, which raises its own error: a
    failure to flush is logged, not raised over it (the client gets an error either way and a
    re-post adds nothing twice)."""
    try:
        store.flush_wal()
    except Exception:
        log.warning("flushing the WAL after a failed event post failed", exc_info=True)


def _update_profiles(
    store: Store, customer_ids: np.ndarray, first_read: Histories | None
) -> tuple[dict[str, UpdatedProfile], dict[str, Unprofiled], bool]:
    """Profile and write ``customer_ids`` from their stored history (``first_read``: read
    already, with the ingest), again for those whose history grew meanwhile (a concurrent post
    committed between reading and writing: the last write of a customer then rests on every
    event), at most ``MAX_ROUNDS`` times. The flag: some write committed changed rows, so the
    WAL is flushed up to a commit after the ingest's."""
    profiled: dict[str, UpdatedProfile] = {}
    unprofiled: dict[str, Unprofiled] = {}
    flushed = False
    pending = customer_ids
    for _ in range(MAX_ROUNDS):
        if not len(pending):
            break
        histories = first_read if first_read is not None else _read_histories(store, pending)
        first_read = None
        counted: dict[str, int] = {}  # stored events per written customer, counted by the write
        for as_of, ids in _customers_by_day(histories.customer_ids, histories.newest_us()).items():
            done, skipped, wrote, counts = _profile_and_write(store, histories, ids, as_of)
            flushed = flushed or wrote
            counted |= counts
            for profile in done:
                profiled[profile.customer_id] = profile
                unprofiled.pop(profile.customer_id, None)
            for skip in skipped:
                unprofiled[skip.customer_id] = skip
                profiled.pop(skip.customer_id, None)
        read = {customer: n for customer, n in histories.counts().items() if customer in counted}
        pending = _grown(read, counted)
    return profiled, unprofiled, flushed


@dataclass(frozen=True)
class FrameHistories:
    """The stored events of many customers: the batch path's frame (``Store.read_events``).

    events : the canonical events frame, ordered by customer, time
    customer_ids : ndarray of object (str), shape (c,) -- sorted, distinct
    codes : ndarray of int64, shape (n,) -- each event's position in ``customer_ids``
    """

    events: pd.DataFrame
    customer_ids: np.ndarray
    codes: np.ndarray

    @classmethod
    def of(cls, events: pd.DataFrame) -> FrameHistories:
        ids, codes = np.unique(events["customer_id"].to_numpy(dtype=object), return_inverse=True)
        return cls(events, ids.astype(object), codes.reshape(-1).astype(np.int64))

    def counts(self) -> dict[str, int]:
        """Events per customer."""
        counts = np.bincount(self.codes, minlength=len(self.customer_ids))
        return dict(zip(self.customer_ids.tolist(), counts.tolist(), strict=True))

    def newest_us(self) -> np.ndarray:
        """Each customer's newest event time, int64 microseconds since the epoch, shape (c,)."""
        micros = self.events["event_time"].array.as_unit("us").asi8
        newest = np.full(len(self.customer_ids), np.iinfo(np.int64).min, dtype=np.int64)
        np.maximum.at(newest, self.codes, micros)
        return newest

    def events_of(self, customer_ids: np.ndarray) -> pd.DataFrame:
        """The events of ``customer_ids`` (a subset of ``self.customer_ids``)."""
        if len(customer_ids) == len(self.customer_ids):  # the usual post: no filtering copy
            return self.events
        return self.events[np.isin(self.codes, np.searchsorted(self.customer_ids, customer_ids))]


Histories = CustomerHistories | FrameHistories


def _read_histories(store: Store, customer_ids: np.ndarray) -> Histories:
    """Every stored event of ``customer_ids``: plain columns for a few customers, else a frame."""
    if len(customer_ids) <= FEW_CUSTOMERS:
        return store.customer_histories(list(customer_ids))
    return FrameHistories.of(store.read_events(customer_ids=list(customer_ids)))


def _grown(profiled: Mapping[str, int], counts: Mapping[str, int]) -> np.ndarray:
    """Customers whose stored event count (``counts``) differs from the events their profile
    rests on (``profiled``): events are only ever added, so another count means events the
    profile missed."""
    customers = sorted(set(profiled) | set(counts))
    return np.array([c for c in customers if counts.get(c, 0) != profiled.get(c, 0)], dtype=object)


def _rejects(store: Store, source: str, rejects: pd.DataFrame, n_conflicting: int) -> tuple[Reject, ...]:
    """The request's rejects by row number: the validator's, plus events that conflict with
    stored ones (recorded by the store under the same source)."""
    if not len(rejects) and not n_conflicting:  # the usual post: no pandas column reads
        return ()
    found = [(int(n), str(r)) for n, r in zip(rejects["row_number"], rejects["reason"], strict=True)]
    if n_conflicting:
        found += store.rejects_of(source, event_schema.REASON_CONFLICTING_DUPLICATE)
    return tuple(Reject(n, reason) for n, reason in sorted(set(found)))


def _customers_by_day(customer_ids: np.ndarray, newest_us: np.ndarray) -> dict[datetime, np.ndarray]:
    """``customer_ids`` (sorted) grouped by the ``as_of`` of their newest event's day, oldest first.

    customer_ids : ndarray of object (str), shape (c,); newest_us : ndarray of int64, shape (c,) --
    each customer's newest event time in microseconds since the epoch (UTC)."""
    days = np.floor_divide(newest_us, _MICROS_PER_DAY)  # floor: days before 1970 too
    return {day_end(int(day) * _MICROS_PER_DAY): customer_ids[days == day] for day in np.unique(days)}


def _profile_and_write(
    store: Store, histories: Histories, customer_ids: np.ndarray, as_of: datetime
) -> tuple[list[UpdatedProfile], list[Unprofiled], bool, dict[str, int]]:
    """Profile ``customer_ids`` from ``histories`` (their stored events) as of ``as_of`` with the
    model selected for it and write them;
    recomputed once when a promotion replaced that model meanwhile (as the daily run does). The
    flag: the write committed changed rows (so synchronously, with a commit record). The
    counts: the written customers' stored events, counted in the write's transaction."""
    version = SELECTIONS.get(store, as_of)
    hinted = version is not None  # then no query: the write checks it under the writers' lock
    if not hinted:
        version = store.model_version_for(as_of)
    replaced: StaleModelError | None = None
    while version is not None:
        model = load_model(store, version)  # the process's cache: a saved version never changes
        batch = _profile(store, version, model, histories, customer_ids, as_of)
        batch.model_version = version
        try:
            customers = list(batch.customer_ids)
            written = store.write_profiles(
                batch,
                require_selected_model=True,
                few_rows=True,
                count_events=True,
                read_current=refreshes_rows(len(customers)),
            )
            SELECTIONS.remember(store, as_of, version)  # the write found it selected
            # The API's profile cache, when configured, from the rows the write read.
            profiles_changed(store, customers, written.current_profiles)
            changed = written.history_inserted + written.history_replaced + written.profiles_written
            assert written.event_counts is not None  # asked for
            return _profiles(batch, model.traits.labels), [], changed > 0, written.event_counts
        except StaleModelError as stale:
            SELECTIONS.remember(store, as_of, stale.selected)
            if hinted:  # the hint was out of date: the write read the selection, as the query would
                hinted, version = False, stale.selected
                continue
            if replaced is not None:
                return [], [Unprofiled(str(c), as_of, f"skipped: {stale}") for c in customer_ids], False, {}
            log.warning("%s; recomputing with model %s", stale, stale.selected)
            replaced, version = stale, stale.selected
    reason = f"no promoted model trained through {as_of.isoformat()} or earlier yet"
    return [], [Unprofiled(str(c), as_of, reason) for c in customer_ids], False, {}


class SelectionHints:
    """The model version last found selected for an ``as_of``, per database and schema: a post
    that finds one here profiles with it without asking ``Store.model_version_for`` first.

    Only a hint: the write checks, under the writers' lock, that the batch's model is the one
    selected for its date (``write_profiles(require_selected_model=True)``), so an out-of-date
    hint (a promotion since) costs a recompute with the version the write found, never a profile
    of the wrong model. Versions found by a write or a ``StaleModelError`` are remembered; a date
    without a selected model is forgotten (its posts ask again). At most ``max_dates`` dates per
    process (least recently used dropped first); thread-safe.
    """

    def __init__(self, max_dates: int = 256) -> None:
        if max_dates < 1:
            raise ValueError(f"max_dates must be >= 1, got {max_dates}")
        self.max_dates = max_dates
        self._lock = threading.Lock()
        self._versions: OrderedDict[tuple[str, str, datetime], int] = OrderedDict()

    def get(self, store: Store, as_of: datetime) -> int | None:
        key = _selection_key(store, as_of)
        with self._lock:
            version = self._versions.get(key)
            if version is not None:
                self._versions.move_to_end(key)
            return version

    def remember(self, store: Store, as_of: datetime, version: int | None) -> None:
        key = _selection_key(store, as_of)
        with self._lock:
            if version is None:
                self._versions.pop(key, None)
                return
            self._versions[key] = int(version)
            self._versions.move_to_end(key)
            while len(self._versions) > self.max_dates:
                self._versions.popitem(last=False)


def _selection_key(store: Store, as_of: datetime) -> tuple[str, str, datetime]:
    """(database URL, schema, as_of): model versions are per schema, as in ``model_cache``."""
    return (str(store.url), store.schema, as_of)


SELECTIONS = SelectionHints()


def _profile(
    store: Store,
    version: int,
    model: TraitflowModel,
    histories: Histories,
    customer_ids: np.ndarray,
    as_of: datetime,
) -> ProfileBatch:
    """The profiles of ``customer_ids`` as of ``as_of`` under ``model`` (saved as ``version``)."""
    if isinstance(histories, FrameHistories):
        return profile_customers(
            histories.events_of(customer_ids),
            model,
            as_of,
            customer_ids=customer_ids,
            fallback=load_fallback(store, version),
        )
    embeddings = resolved_embeddings(load_profiler(store, version), histories, customer_ids, as_of)
    return profiles_from_embeddings(model, embeddings, as_of, setup=load_projection(store, version))


def resolved_embeddings(
    profiler: CustomerProfiler, histories: CustomerHistories, customer_ids: np.ndarray, as_of: datetime
) -> CustomerEmbeddings:
    """``aggregate.customer_embeddings`` of ``customer_ids`` (a subset of
    ``histories.customer_ids``), each customer's events resolved by ``profiler.resolve``."""
    positions = np.searchsorted(histories.customer_ids, customer_ids)
    starts, stops = histories.starts[positions], histories.starts[positions + 1]
    resolved = [
        profiler.resolve(
            histories.actions[start:stop],
            histories.product_ids[start:stop],
            histories.categories[start:stop],
            histories.event_us[start:stop].astype("datetime64[us]"),
            as_of=as_of,
        )
        for start, stop in zip(starts.tolist(), stops.tolist(), strict=True)
    ]
    n_events = (stops - starts).astype(np.int64)
    codes = np.repeat(np.arange(len(customer_ids)), n_events)
    vectors, has_vector = weighted_means(
        codes,
        np.concatenate([r.rows for r in resolved]),
        np.concatenate([r.weights for r in resolved]),
        len(customer_ids),
        profiler.matrix,
    )
    return CustomerEmbeddings(
        customer_ids=np.asarray(customer_ids, dtype=object),
        vectors=vectors,
        n_events=n_events,
        # no_history exactly where has_vector is False: no event weighs more than zero
        cold_start=np.array([r.cold_start for r in resolved], dtype=object),
        has_vector=has_vector,
        n_known_tokens=np.array([r.n_known_tokens for r in resolved], dtype=np.int64),
    )


def _profiles(batch: ProfileBatch, labels: Sequence[str]) -> list[UpdatedProfile]:
    trait_ids = tuple(int(t) for t in batch.trait_ids)
    known = batch.n_known_tokens
    confidence = None if known is None else profile_confidence(known)
    assert batch.model_version is not None  # set by the caller before writing
    return [
        UpdatedProfile(
            customer_id=str(customer),
            as_of=utc(batch.as_of),
            model_version=int(batch.model_version),
            trait_ids=trait_ids,
            labels=tuple(labels),
            scores=tuple(float(s) for s in batch.profiles[i]),
            dominant_trait_id=trait_ids[int(np.argmax(batch.profiles[i]))],
            n_events=int(batch.n_events[i]),
            n_known_tokens=None if known is None else int(known[i]),
            confidence=None if confidence is None else float(confidence[i]),
            cold_start=str(batch.cold_start[i]),
        )
        for i, customer in enumerate(batch.customer_ids)
    ]
