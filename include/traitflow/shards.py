"""Customer shards: which of ``n_shards`` parallel tasks profiles a customer.

A customer's *bucket* is a stable hash of its id: the first 8 bytes (little-endian) of BLAKE2b
over the UTF-8 id, modulo ``N_BUCKETS``. Shard ``s`` of ``n`` holds the buckets ``b`` with
``b % n == s``: whole buckets, never a part of one.

Why buckets and not ``hash % n_shards`` directly: the trait projection solves its customers in
batches, and a row's result depends slightly on the rest of its batch (BLAS kernels round a row
differently by its position; the coordinate descent keeps sweeping converged rows until half of
the batch has converged). ``profiles_from_embeddings`` therefore projects bucket by bucket, and a
bucket holds the same customers, in the same order, whatever the number of shards: a customer's
profile is bit-identical for every ``n_shards`` (the sharded runs' table checksums equal the
unsharded run's) on one machine and BLAS build. ``N_BUCKETS`` = 256 keeps the shards' sizes
within one bucket of each other (256 // n or one more) and the per-bucket overhead (one
projection call each) small.

Same function for every caller (DAG tasks, CLI chains, tests): no second implementation.
"""

from __future__ import annotations

import hashlib

import numpy as np

from traitflow.config import MAX_SHARDS

N_BUCKETS = 256  # a multiple of every power of two up to MAX_SHARDS: those split evenly


def check_n_shards(n_shards: int) -> int:
    """``n_shards`` as an int in 1..MAX_SHARDS, else ValueError."""
    if isinstance(n_shards, bool) or not isinstance(n_shards, int | np.integer):
        raise ValueError(f"n_shards must be an integer, got {n_shards!r}")
    if not 1 <= n_shards <= MAX_SHARDS:
        raise ValueError(f"n_shards must be between 1 and {MAX_SHARDS}, got {n_shards}")
    return int(n_shards)


def buckets_of(customer_ids: np.ndarray) -> np.ndarray:
    """Bucket of each customer id.

    Parameters
    ----------
    customer_ids : array-like of str, shape (n,)

    Returns
    -------
    ndarray of int64, shape (n,), values in [0, N_BUCKETS)
    """
    ids = np.asarray(customer_ids, dtype=object)
    if len(ids) == 0:
        return np.zeros(0, dtype=np.int64)
    # One C hash call per id (about a microsecond); the digests are joined and read as one array.
    digests = b"".join(hashlib.blake2b(str(i).encode("utf-8"), digest_size=8).digest() for i in ids)
    return (np.frombuffer(digests, dtype="<u8") % np.uint64(N_BUCKETS)).astype(np.int64)


def shards_of(customer_ids: np.ndarray, n_shards: int) -> np.ndarray:
    """Shard of each customer id, shape (n,), int64 in [0, n_shards)."""
    return buckets_of(customer_ids) % check_n_shards(n_shards)


def in_shard(customer_ids: np.ndarray, shard: int, n_shards: int) -> np.ndarray:
    """The ids of ``customer_ids`` that belong to ``shard`` of ``n_shards``, in their given order."""
    ids = np.asarray(customer_ids, dtype=object)
    if not 0 <= shard < check_n_shards(n_shards):
        raise ValueError(f"shard must be between 0 and {n_shards - 1}, got {shard}")
    if n_shards == 1:
        return ids
    return ids[shards_of(ids, n_shards) == shard]
