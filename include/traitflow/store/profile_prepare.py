"""Checking a ``ProfileBatch`` before it is written: against its model (trait ids, vector size,
status) and the storage contract (dtypes, finite values, unique ids, text limits), then sorted by
customer_id and laid out as the binary COPY columns of the profile tables (``profiles``)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from itertools import pairwise

import numpy as np
import psycopg
import pyarrow as pa
import pyarrow.compute as pc

from traitflow import event_schema
from traitflow.profile_batch import COLD_START_VALUES, ProfileBatch

from . import copybin
from ._util import utc
from .errors import ModelStateError, StoreInputError
from .ingest import as_text_array, check_text
from .models import ModelTraits, model_trait_ids


@dataclass
class PreparedProfiles:
    """A checked batch, rows in customer_id byte order (= COLLATE "C")."""

    as_of: datetime
    model_version: int
    n: int
    ids: pa.Array  # large_string
    traits: np.ndarray  # float64 (n, n_traits)
    embeddings: np.ndarray  # float32 (n, vector_size)
    dominant: np.ndarray  # int64
    n_events: np.ndarray  # int64
    cold_start: pa.Array  # large_string
    n_known_tokens: np.ndarray | None  # int64, or None: not recorded (written as NULL)

    def _n_known(self) -> copybin.Column:
        if self.n_known_tokens is None:
            return copybin.Column("int8", np.zeros(self.n, dtype=np.int64), np.ones(self.n, dtype=bool))
        return copybin.int8(self.n_known_tokens)

    @property
    def columns(self) -> list[copybin.Column]:
        """Columns of the staging table ``_tf_stage_profiles``, in its column order."""
        return [
            copybin.text(self.ids),
            copybin.float8_array(self.traits),
            copybin.packed_float4(self.embeddings),
            copybin.int8(self.dominant),
            copybin.int8(self.n_events),
            copybin.text(self.cold_start),
            self._n_known(),
        ]

    def _constants(self) -> list[copybin.Column]:
        as_of = np.datetime64(self.as_of.replace(tzinfo=None), "us")
        return [
            copybin.timestamptz(np.full(self.n, as_of)),
            copybin.int4(np.full(self.n, self.model_version, dtype=np.int32)),
        ]

    def history_columns(self) -> list[copybin.Column]:
        """Columns for ``_COPY_HISTORY``."""
        return [
            copybin.text(self.ids),
            *self._constants(),
            copybin.float8_array(self.traits),
            copybin.int8(self.dominant),
            copybin.int8(self.n_events),
            copybin.text(self.cold_start),
            self._n_known(),
        ]

    def current_columns(self) -> list[copybin.Column]:
        """Columns for ``_COPY_CURRENT``."""
        return [*self.history_columns(), copybin.packed_float4(self.embeddings)]


# Up to this many values ``_all_finite`` checks each one directly: no temporary worth avoiding,
# and no floating-point error state to set up around the sum.
_FEW_VALUES = 4096


def _all_finite(values: np.ndarray) -> bool:
    if values.size <= _FEW_VALUES:
        return bool(np.isfinite(values).all())
    # A float64 sum is finite when every value is and no overflow happened: then there is no need
    # for the elementwise check (and its n-sized temporary); otherwise that check decides.
    with np.errstate(over="ignore", invalid="ignore"):
        return bool(np.isfinite(values.sum(dtype=np.float64)) or np.isfinite(values).all())


_COLD_START_SET = pa.array(COLD_START_VALUES, pa.large_string())
# Up to this many values ``_check_cold_start`` and ``_strictly_increasing`` check the Python
# strings: an Arrow kernel call costs more than a comparison per value for the one or few
# customers of an event post.
_FEW_TEXTS = 64
# The one-value arrays of a post of one customer, built once (Arrow arrays are immutable).
_ONE_COLD_START = {value: pa.array([value], pa.large_string()) for value in COLD_START_VALUES}


def _check_cold_start(values: np.ndarray) -> pa.Array:
    """``values`` as Arrow text, after checking each is one of ``COLD_START_VALUES``."""
    if len(values) <= _FEW_TEXTS:
        few = values.tolist()
        # Only plain ``str`` values of the set take this path (the general one decides the others).
        if all(type(value) is str and value in _ONE_COLD_START for value in few):
            return _ONE_COLD_START[few[0]] if len(few) == 1 else pa.array(few, pa.large_string())
    try:
        array = as_text_array(values, "cold_start")
        # One kernel: the position in COLD_START_VALUES is null for any other value and for null.
        valid = pc.index_in(array, value_set=_COLD_START_SET).null_count == 0
    except StoreInputError:  # not strings
        valid = False
    if not valid:
        bad = next(v for v in values.tolist() if not (isinstance(v, str) and v in COLD_START_VALUES))
        raise StoreInputError(f"cold_start value {bad!r} is not one of {COLD_START_VALUES}")
    return array


def _strictly_increasing(ids: pa.Array) -> bool:
    """Whether ``ids`` (two or more, no nulls: ``check_text`` refused them) are in strictly
    increasing byte order. Up to ``_FEW_TEXTS`` ids compare as Python strings: code point order is
    UTF-8's byte order."""
    if len(ids) <= _FEW_TEXTS:
        few = ids.to_pylist()
        return all(a < b for a, b in pairwise(few))
    return bool(pc.all(pc.less(ids.slice(0, len(ids) - 1), ids.slice(1))).as_py())


def _same_trait_ids(batch_ids: np.ndarray, trait_ids: np.ndarray) -> bool:
    """Whether a batch's trait ids (of the model's shape) equal the model's as int64. Those of
    a model's batch are int64 already: their Python ints compare without numpy temporaries."""
    if batch_ids.dtype == np.int64:
        return bool(batch_ids.tolist() == trait_ids.tolist())
    return np.array_equal(batch_ids.astype(np.int64), trait_ids)


def batch_version(batch: ProfileBatch) -> int:
    """The batch's model version (``StoreInputError`` when it has none)."""
    if batch.model_version is None:
        raise StoreInputError("ProfileBatch.model_version is None: save the model first (Store.save_model)")
    return int(batch.model_version)


def prepare_batch(
    conn: psycopg.Connection, batch: ProfileBatch, model: ModelTraits | None = None
) -> PreparedProfiles:
    """Check ``batch`` against its model and the storage contract; sort it by customer_id.
    ``model``: ``model_trait_ids`` of the batch's version, read already (else read here)."""
    version = batch_version(batch)
    trait_ids, _labels, vector_size, status = model_trait_ids(conn, version) if model is None else model
    if status == "rejected":
        raise ModelStateError(f"model {version} is rejected; profiles cannot be written with it")
    batch_ids = np.asarray(batch.trait_ids)
    if batch_ids.shape != trait_ids.shape or not _same_trait_ids(batch_ids, trait_ids):
        raise StoreInputError(
            f"batch trait_ids {batch_ids.tolist()} differ from model {version}'s trait ids "
            f"{trait_ids.tolist()} (same ids in the same position order are required)"
        )
    n = len(batch)
    profiles = np.asarray(batch.profiles)
    embeddings = np.asarray(batch.embeddings)
    if profiles.dtype != np.float64:
        raise StoreInputError(f"profiles must be float64, got {profiles.dtype}")
    if embeddings.dtype != np.float32 or embeddings.ndim != 2 or embeddings.shape != (n, vector_size):
        raise StoreInputError(
            f"embeddings must be float32 of shape ({n}, {vector_size}), "
            f"got {embeddings.dtype} {embeddings.shape}"
        )
    if not _all_finite(profiles) or not _all_finite(embeddings):
        raise StoreInputError("profiles and embeddings must be finite (no NaN/inf)")
    n_events = np.asarray(batch.n_events)
    if n_events.dtype.kind not in "iu" or (n_events < 0).any():
        raise StoreInputError("n_events must be non-negative integers")
    n_known = None if batch.n_known_tokens is None else np.asarray(batch.n_known_tokens)
    if n_known is not None and (
        n_known.dtype.kind not in "iu" or (n_known < 0).any() or (n_known > n_events).any()
    ):
        raise StoreInputError("n_known_tokens must be integers between 0 and n_events")
    cold_start = _check_cold_start(np.asarray(batch.cold_start, dtype=object))
    id_array = as_text_array(np.asarray(batch.customer_ids, dtype=object), "customer_ids")
    check_text(id_array, "customer_ids", required=True, max_chars=event_schema.MAX_ID_LENGTH)
    # Rows in customer_id byte order: index insertions are local (appends on a first load) and the
    # current table's heap stays in key order. The pipeline's batches are sorted already
    # (strictly increasing = sorted and unique, checked in one pass); others are sorted here,
    # which makes duplicates neighbours.
    n_events = n_events.astype(np.int64)
    n_known = None if n_known is None else n_known.astype(np.int64)
    if n > 1 and not _strictly_increasing(id_array):
        order = pc.sort_indices(id_array)
        id_array, cold_start = id_array.take(order), cold_start.take(order)
        same = pc.equal(id_array.slice(1), id_array.slice(0, n - 1))
        if pc.any(same).as_py():
            duplicate = id_array[int(np.flatnonzero(same.to_numpy(zero_copy_only=False))[0])].as_py()
            raise StoreInputError(f"customer id {duplicate!r} appears twice in the batch")
        rows = order.to_numpy()
        profiles, embeddings, n_events = profiles[rows], embeddings[rows], n_events[rows]
        n_known = None if n_known is None else n_known[rows]
    dominant = trait_ids[np.argmax(profiles, axis=1)] if n else np.zeros(0, dtype=np.int64)
    return PreparedProfiles(
        as_of=utc(batch.as_of),
        model_version=version,
        n=n,
        ids=id_array,
        traits=profiles,
        embeddings=embeddings,
        dominant=dominant,
        n_events=n_events,
        cold_start=cold_start,
        n_known_tokens=n_known,
    )
