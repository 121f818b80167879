"""Profile writes: idempotent history, forward-only current rows, validation, atomicity."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import psycopg
import pytest

from traitflow import event_schema
from traitflow.model import TraitflowModel
from traitflow.profile_batch import ProfileBatch
from traitflow.store import ModelStateError, NotFoundError, Store, StoreInputError
from traitflow.store import profiles as store_profiles

BuildModel = Callable[..., TraitflowModel]
BuildBatch = Callable[..., ProfileBatch]
D1 = datetime(2024, 1, 10, tzinfo=UTC)
D2 = D1 + timedelta(days=1)
IDS = ["c1", "c2", "o'brien;--", 'quote"d\\', "emoji 🧑‍🚀", "\\N", "tab\tnew\nline", "x" * 256]


@pytest.fixture
def version(store: Store, build_model: BuildModel) -> int:
    v = store.save_model(build_model())
    store.promote(v)
    return v


def profile_rows(store: Store) -> dict[str, tuple]:
    rows = store.connection.execute(
        "SELECT customer_id, as_of, model_version, traits, dominant_trait_id, n_events, cold_start"
        " FROM customer_profiles"
    ).fetchall()
    return {r[0]: r[1:] for r in rows}


def test_write_then_read_back_exactly(store: Store, version: int, build_profile_batch: BuildBatch) -> None:
    batch = build_profile_batch(version, IDS, as_of=D1)
    report = store.write_profiles(batch)
    assert (report.n_customers, report.history_inserted, report.profiles_written) == (len(IDS),) * 3
    for i, cid in enumerate(IDS):
        profile = store.current_profile(cid)
        assert profile is not None and profile["customer_id"] == cid
        assert profile["as_of"] == D1 and profile["model_version"] == version
        assert [t["trait_id"] for t in profile["traits"]] == [3, 7, 11]
        assert np.array([t["score"] for t in profile["traits"]]).tobytes() == batch.profiles[i].tobytes()
        assert profile["dominant_trait_id"] == int(batch.trait_ids[np.argmax(batch.profiles[i])])
        assert profile["dominant_label"].startswith(f"trait {profile['dominant_trait_id']} ")
        assert profile["embedding"].tobytes() == batch.embeddings[i].tobytes()  # bit-identical float32
        assert profile["n_events"] == batch.n_events[i] and profile["cold_start"] == batch.cold_start[i]
        assert profile["n_known_tokens"] == batch.n_known_tokens[i]
        assert profile["confidence"] == pytest.approx(batch.n_known_tokens[i] / (batch.n_known_tokens[i] + 3))
    assert store.current_profile("nobody") is None


def test_writing_the_same_batch_twice_changes_nothing(
    store: Store, version: int, build_profile_batch: BuildBatch
) -> None:
    batch = build_profile_batch(version, IDS, as_of=D1)
    store.write_profiles(batch)
    before = store.table_checksums()  # includes updated_at: an unchanged row is not touched
    again = store.write_profiles(batch)
    assert store.table_checksums() == before
    assert (again.history_inserted, again.history_replaced, again.profiles_written) == (0, 0, 0)


def test_rerunning_a_date_replaces_its_history_rows(
    store: Store, version: int, build_profile_batch: BuildBatch
) -> None:
    store.write_profiles(build_profile_batch(version, IDS, as_of=D1, seed=1))
    changed = build_profile_batch(version, IDS, as_of=D1, seed=2)
    report = store.write_profiles(changed)
    assert (report.history_inserted, report.history_replaced, report.profiles_written) == (
        0,
        len(IDS),
        len(IDS),
    )
    assert store.table_counts()["customer_profile_history"] == len(IDS)
    history = store.profile_history(IDS[0])
    assert len(history) == 1
    assert (
        history[["trait_3", "trait_7", "trait_11"]].to_numpy()[0].tobytes() == changed.profiles[0].tobytes()
    )


def test_current_rows_only_move_forward(store: Store, version: int, build_profile_batch: BuildBatch) -> None:
    assert store.latest_profile_as_of() is None
    newer = build_profile_batch(version, IDS[:4], as_of=D2, seed=1)
    store.write_profiles(newer)
    current_before = profile_rows(store)
    embeddings_before = store.connection.execute(
        "SELECT customer_id, as_of, embedding, updated_at FROM customer_profiles ORDER BY customer_id"
    ).fetchall()
    # Backfill the older date for the same customers plus two new ones.
    backfill = build_profile_batch(version, IDS[:6], as_of=D1, seed=2)
    report = store.write_profiles(backfill)
    assert report.history_inserted == 6
    assert report.profiles_written == 2  # only the new customers
    after = profile_rows(store)
    for cid in IDS[:4]:
        assert after[cid] == current_before[cid]  # not overwritten by the older date
    assert after[IDS[4]][0] == D1 and after[IDS[5]][0] == D1
    embeddings_after = store.connection.execute(
        "SELECT customer_id, as_of, embedding, updated_at FROM customer_profiles WHERE as_of = %s"
        " ORDER BY customer_id",
        (D2,),
    ).fetchall()
    assert embeddings_after == embeddings_before
    assert len(store.profile_history(IDS[0])) == 2  # history keeps both dates
    assert store.latest_profile_as_of() == D2
    # The same date again (e.g. the weekly recompute under a new model) does replace.
    model_b = store.save_model(_model_like(store, version))
    same_day = build_profile_batch(model_b, IDS[:1], as_of=D2, seed=3)
    assert store.write_profiles(same_day).profiles_written == 1
    assert profile_rows(store)[IDS[0]][1] == model_b


def _model_like(store: Store, version: int) -> TraitflowModel:
    model = store.load_model(version)
    model.version = None
    return model


@pytest.mark.parametrize(
    ("first", "last_step"),
    [
        (IDS[:3], "_upsert_current_profiles"),  # existing customers: staged UPDATE + INSERT
        ([], "_copy_current_profiles"),  # all new: COPY straight into both tables
    ],
)
def test_a_failure_after_every_table_was_written_changes_nothing(
    store: Store,
    version: int,
    build_profile_batch: BuildBatch,
    monkeypatch: pytest.MonkeyPatch,
    first: list[str],
    last_step: str,
) -> None:
    if first:
        store.write_profiles(build_profile_batch(version, first, as_of=D1, seed=1))
    before = store.table_checksums()
    written = getattr(store_profiles, last_step)

    def write_then_fail(*args: object, **kwargs: object) -> int:
        assert written(*args, **kwargs) > 0
        raise RuntimeError("injected after history and current profiles were written")

    monkeypatch.setattr(store_profiles, last_step, write_then_fail)
    with pytest.raises(RuntimeError, match="injected"):
        store.write_profiles(build_profile_batch(version, IDS, as_of=D2, seed=2))
    assert store.table_checksums() == before


def test_new_customers_get_the_same_rows_whichever_way_they_are_written(
    store: Store, make_store: Callable[..., Store], build_model: BuildModel, build_profile_batch: BuildBatch
) -> None:
    # All customers new: COPY straight into the tables. One customer already known: staged path.
    other = make_store(fresh=True)
    other.upgrade()
    for s in (store, other):
        s.promote(s.save_model(build_model()))
    version = store.active_model_version()
    assert version == other.active_model_version()
    other.write_profiles(build_profile_batch(version, ["known"], as_of=D1, seed=1))
    batch = build_profile_batch(version, IDS, as_of=D2, seed=2)
    both = build_profile_batch(version, [*IDS, "known"], as_of=D2, seed=2)
    both.profiles[: len(IDS)], both.embeddings[: len(IDS)] = batch.profiles, batch.embeddings
    both.n_events[: len(IDS)], both.cold_start[: len(IDS)] = batch.n_events, batch.cold_start
    both.n_known_tokens[: len(IDS)] = batch.n_known_tokens
    direct, staged = store.write_profiles(batch), other.write_profiles(both)
    assert "stage" not in direct.timings and "stage" in staged.timings
    assert (direct.history_inserted, direct.profiles_written) == (len(IDS), len(IDS))
    assert (staged.history_inserted, staged.profiles_written) == (len(IDS) + 1, len(IDS) + 1)
    columns = (
        "customer_id, as_of, model_version, traits, dominant_trait_id, n_events, cold_start, n_known_tokens"
    )
    for query in (
        f"SELECT {columns}, embedding FROM customer_profiles",
        f"SELECT {columns} FROM customer_profile_history",
    ):
        query += " WHERE customer_id <> 'known' AND as_of = %s ORDER BY customer_id"
        rows = [s.connection.execute(query, (D2,)).fetchall() for s in (store, other)]
        assert len(rows[0]) == len(IDS) and rows[0] == rows[1], query


def test_the_direct_path_is_taken_exactly_when_no_row_lies_in_the_batch_id_range(
    store: Store, version: int, build_profile_batch: BuildBatch
) -> None:
    store.write_profiles(build_profile_batch(version, ["m"], as_of=D1))
    past = store.write_profiles(build_profile_batch(version, ["n1", "n2"], as_of=D1, seed=2))
    # "m" lies between "a" and "z": staged, though neither customer has a row yet.
    around = store.write_profiles(build_profile_batch(version, ["a", "z"], as_of=D1, seed=1))
    again = store.write_profiles(build_profile_batch(version, ["n2", "n3"], as_of=D2, seed=3))
    assert "stage" not in past.timings and "stage" in around.timings and "stage" in again.timings
    assert (around.history_inserted, around.profiles_written) == (2, 2)
    assert (again.history_inserted, again.profiles_written) == (2, 2)
    assert store.table_counts()["customer_profiles"] == 6
    assert store.table_counts()["customer_profile_history"] == 7


def test_a_partial_rerun_of_a_date_inserts_the_new_customers_once(
    store: Store, version: int, build_profile_batch: BuildBatch
) -> None:
    # The optimistic INSERT of the date's history inserts "c0" before it hits "c1"'s row; the
    # savepoint undoes that, and the fallback writes each customer exactly once.
    store.write_profiles(build_profile_batch(version, ["c1", "c2"], as_of=D1, seed=1))
    rerun = build_profile_batch(version, ["c0", "c1", "c2", "c3"], as_of=D1, seed=2)
    report = store.write_profiles(rerun)
    assert (report.history_inserted, report.history_replaced, report.profiles_written) == (2, 2, 4)
    history = store.connection.execute(
        "SELECT customer_id, traits FROM customer_profile_history ORDER BY customer_id"
    ).fetchall()
    assert [row[0] for row in history] == ["c0", "c1", "c2", "c3"]
    assert np.array([row[1] for row in history]).tobytes() == rerun.profiles.tobytes()


def test_the_join_settings_of_the_caller_transaction_are_restored(
    store: Store, version: int, build_profile_batch: BuildBatch
) -> None:
    conn = store.connection
    store.write_profiles(build_profile_batch(version, IDS, as_of=D1, seed=1))
    settings = "SELECT current_setting('enable_hashjoin'), current_setting('enable_mergejoin')"
    for caller in ("on", "off"):
        with conn.transaction():
            conn.execute("SELECT set_config('enable_mergejoin', %s, true)", (caller,))
            report = store_profiles.write_profiles(conn, build_profile_batch(version, IDS, as_of=D2, seed=2))
            assert "stage" in report.timings
            assert conn.execute(settings).fetchone() == ("on", caller)


def test_a_backfill_older_than_every_current_row_probes_none_of_them(
    store: Store, version: int, build_profile_batch: BuildBatch, monkeypatch: pytest.MonkeyPatch
) -> None:
    store.write_profiles(build_profile_batch(version, IDS[:4], as_of=D2, seed=1))
    probed: list[bool] = []
    probes = store_profiles._primary_key_probes

    def recording(conn: psycopg.Connection) -> AbstractContextManager[None]:
        probed.append(True)
        return probes(conn)

    monkeypatch.setattr(store_profiles, "_primary_key_probes", recording)
    before = profile_rows(store)
    backfill = store.write_profiles(build_profile_batch(version, IDS[:6], as_of=D1, seed=2))
    assert (backfill.history_inserted, backfill.profiles_written) == (6, 2) and probed == []
    after = profile_rows(store)
    assert {cid: after[cid] for cid in IDS[:4]} == before
    # One current row at or before the date is enough to move rows forward again.
    forward = store.write_profiles(build_profile_batch(version, IDS[:6], as_of=D2, seed=3))
    assert forward.profiles_written == 6 and probed == [True]


def test_moving_current_rows_forward_rewrites_only_what_changed(
    store: Store, version: int, build_profile_batch: BuildBatch
) -> None:
    store.write_profiles(build_profile_batch(version, IDS, as_of=D1, seed=1))
    stamps = dict(
        store.connection.execute("SELECT customer_id, updated_at FROM customer_profiles").fetchall()
    )
    # The next day for two customers (in a later transaction: a later now()).
    store.connection.execute("SELECT pg_sleep(0.01)")
    moved = build_profile_batch(version, IDS[:2], as_of=D2, seed=2)
    report = store.write_profiles(moved)
    assert (report.history_inserted, report.history_replaced, report.profiles_written) == (2, 0, 2)
    # Re-running the first day for everyone: history unchanged, current rows equal or newer.
    again = store.write_profiles(build_profile_batch(version, IDS, as_of=D1, seed=1))
    assert (again.history_inserted, again.history_replaced, again.profiles_written) == (0, 0, 0)
    rows = {r[0]: r[1:] for r in store.connection.execute(
        "SELECT customer_id, as_of, embedding, updated_at FROM customer_profiles"
    ).fetchall()}  # fmt: skip
    for i, cid in enumerate(IDS):
        if i < 2:
            assert rows[cid][0] == D2 and rows[cid][2] > stamps[cid]
            assert bytes(rows[cid][1]) == moved.embeddings[i].astype(">f4").tobytes()  # packed
        else:
            assert rows[cid][0] == D1 and rows[cid][2] == stamps[cid]


def test_invalid_batches_are_refused_before_anything_is_written(
    store: Store, version: int, build_profile_batch: BuildBatch, build_model: BuildModel
) -> None:
    store.write_profiles(build_profile_batch(version, IDS[:2], as_of=D1))
    rejected = store.save_model(build_model(seed=5))
    store.reject_model(rejected, "bad")
    before = store.table_checksums()

    def batch(**changes: object) -> ProfileBatch:
        b = build_profile_batch(version, ["a", "b", "c"], as_of=D2)
        for name, value in changes.items():
            setattr(b, name, value)
        return b

    with pytest.raises(StoreInputError, match="model_version is None"):
        store.write_profiles(batch(model_version=None))
    with pytest.raises(NotFoundError, match="model version 999"):
        store.write_profiles(batch(model_version=999))
    with pytest.raises(StoreInputError, match="differ from model"):
        store.write_profiles(batch(trait_ids=np.array([3, 11, 7])))
    with pytest.raises(StoreInputError, match="embeddings must be float32"):
        store.write_profiles(batch(embeddings=np.zeros((3, 5))))
    with pytest.raises(StoreInputError, match="embeddings must be float32"):
        store.write_profiles(batch(embeddings=np.zeros((3, 4), dtype=np.float32)))
    with pytest.raises(StoreInputError, match="finite"):
        store.write_profiles(batch(profiles=np.full((3, 3), np.nan)))
    with pytest.raises(StoreInputError, match="appears twice"):
        store.write_profiles(batch(customer_ids=np.array(["a", "b", "a"], dtype=object)))
    with pytest.raises(StoreInputError, match="'a' appears twice"):
        store.write_profiles(batch(customer_ids=np.array(["a", "a", "b"], dtype=object)))
    with pytest.raises(StoreInputError, match="cold_start value 5"):
        store.write_profiles(batch(cold_start=np.array(["none", 5, "none"], dtype=object)))
    with pytest.raises(StoreInputError, match="finite"):
        store.write_profiles(batch(embeddings=np.full((3, 5), np.inf, dtype=np.float32)))
    with pytest.raises(StoreInputError, match="cold_start value 'maybe'"):
        store.write_profiles(batch(cold_start=np.array(["none", "maybe", "none"], dtype=object)))
    for missing in (None, np.nan):
        with pytest.raises(StoreInputError, match=f"cold_start value {missing!r}"):
            store.write_profiles(batch(cold_start=np.array(["none", missing, "none"], dtype=object)))
    with pytest.raises(StoreInputError, match="longer than 256"):
        store.write_profiles(batch(customer_ids=np.array(["a", "b", "🧑" * 10_000], dtype=object)))
    with pytest.raises(StoreInputError, match="NUL"):
        store.write_profiles(batch(customer_ids=np.array(["a", "b\x00", "c"], dtype=object)))
    with pytest.raises(StoreInputError, match="missing or empty"):
        store.write_profiles(batch(customer_ids=np.array(["a", "", "c"], dtype=object)))
    with pytest.raises(ModelStateError, match="rejected"):
        store.write_profiles(batch(model_version=rejected))
    assert store.table_checksums() == before


def test_an_empty_batch_is_a_no_op(store: Store, version: int, build_profile_batch: BuildBatch) -> None:
    before = store.table_checksums()
    report = store.write_profiles(build_profile_batch(version, [], as_of=D1))
    assert report.n_customers == 0 and store.table_checksums() == before


def test_promote_with_profiles_is_one_atomic_switch(
    store: Store, version: int, build_profile_batch: BuildBatch, build_model: BuildModel
) -> None:
    candidate = store.save_model(build_model(seed=9))
    store.reject_model(candidate, "failed the gate")
    before = store.table_checksums()
    with pytest.raises(ModelStateError):  # promotion fails -> the profiles are not written either
        store.promote(candidate, profiles=build_profile_batch(version, IDS, as_of=D2))
    assert store.table_checksums() == before
    fresh = store.save_model(build_model(seed=10))
    report = store.promote(fresh, profiles=build_profile_batch(fresh, IDS, as_of=D2))
    assert report is not None and (report.history_inserted, report.profiles_written) == (len(IDS), len(IDS))
    assert store.active_model_version() == fresh
    assert store.promote(fresh) is None  # no batch, no write report
    assert {row[1] for row in profile_rows(store).values()} == {fresh}


def test_publish_saves_writes_and_promotes_in_one_transaction(
    store: Store, version: int, build_profile_batch: BuildBatch, build_model: BuildModel
) -> None:
    before = store.table_checksums()
    versions_before = len(store.model_versions())
    refused = build_profile_batch(None, ["c1", "c1"], as_of=D2)  # a duplicate id: refused
    candidate = build_model(seed=11)
    with pytest.raises(StoreInputError, match="appears twice"):
        store.publish(candidate, refused, drift={"aligned_drift": 0.1})
    # Nothing left behind: no staging version, no profiles, the old model still active.
    assert store.table_checksums() == before and len(store.model_versions()) == versions_before
    assert candidate.version is None and refused.model_version is None
    assert store.active_model_version() == version

    batch = build_profile_batch(None, IDS, as_of=D2)
    published = store.publish(candidate, batch, drift={"aligned_drift": 0.1})
    assert candidate.version == published == batch.model_version == store.active_model_version()
    assert {row[1] for row in profile_rows(store).values()} == {published}
    saved = store.model_versions().set_index("model_version").loc[published]
    assert saved["status"] == "active" and saved["drift"] == {"aligned_drift": 0.1}


def test_publish_with_a_run_key_is_idempotent(
    store: Store, version: int, build_profile_batch: BuildBatch, build_model: BuildModel
) -> None:
    """A retried promotion (same candidate key) publishes nothing twice and changes no status."""
    calls = [
        store.publish(build_model(seed=11), build_profile_batch(None, IDS, as_of=D2), run_key="cand-1")
        for _ in range(3)
    ]
    assert calls[0] == calls[1] == calls[2] == store.active_model_version()
    models = store.model_versions()
    assert len(models) == 2  # the fixture's model and one published version
    statuses = dict(zip(models["model_version"], models["status"], strict=True))
    assert statuses == {version: "retired", calls[0]: "active"}
    after_first = store.table_checksums()
    retried = build_model(seed=11)
    batch = build_profile_batch(None, IDS, as_of=D2)
    assert store.publish(retried, batch, run_key="cand-1") == calls[0]
    assert retried.version == batch.model_version == calls[0]  # the caller sees the published version
    assert store.table_checksums() == after_first

    # A later model is promoted; a late retry of the first promotion must not re-activate it.
    newer = store.publish(build_model(seed=12), build_profile_batch(None, IDS, as_of=D2), run_key="cand-2")
    before_retry = store.table_checksums()
    late = store.publish(build_model(seed=11), build_profile_batch(None, IDS, as_of=D2), run_key="cand-1")
    assert late == calls[0]
    assert store.active_model_version() == newer
    assert store.table_checksums() == before_retry


def test_profile_writers_queue_per_schema_not_per_database(
    store: Store,
    version: int,
    make_store: Callable[..., Store],
    build_model: BuildModel,
    build_profile_batch: BuildBatch,
) -> None:
    other = make_store(fresh=True)  # another deployment in the same database
    other.upgrade()
    other_version = other.save_model(build_model())
    other.promote(other_version)
    holder = make_store()  # a writer of the first schema, mid-transaction
    with holder.connection.transaction():
        store_profiles._lock_profiles(holder.connection)
        # The other schema's writer does not wait for it ...
        other.connection.execute("SET lock_timeout = '2s'")
        written = other.write_profiles(build_profile_batch(other_version, ["c1"], as_of=D1))
        assert written.history_inserted == 1
        # ... a second writer of the same schema does (and gives up at its lock timeout).
        store.connection.execute("SET lock_timeout = '200ms'")
        with pytest.raises(psycopg.errors.LockNotAvailable):
            store.write_profiles(build_profile_batch(version, ["c1"], as_of=D1))
    store.connection.execute("RESET lock_timeout")
    assert store.write_profiles(build_profile_batch(version, ["c1"], as_of=D1)).history_inserted == 1


ALL_COLUMNS = (
    "customer_id, as_of, model_version, traits, dominant_trait_id, n_events, cold_start, n_known_tokens"
)


def _tables(store: Store) -> tuple[list[tuple], list[tuple]]:
    """Every current row (with its embedding and updated_at) and every history row, in key order."""
    conn = store.connection
    current = conn.execute(
        f"SELECT {ALL_COLUMNS}, embedding, updated_at FROM customer_profiles ORDER BY customer_id"
    ).fetchall()
    history = conn.execute(
        f"SELECT {ALL_COLUMNS} FROM customer_profile_history ORDER BY customer_id, as_of"
    ).fetchall()
    return current, history


def test_few_rows_as_parameters_write_what_the_staged_path_writes(
    make_store: Callable[..., Store], build_model: BuildModel, build_profile_batch: BuildBatch
) -> None:
    """The same sequence of writes (first write, a re-run with changes, an identical re-run, a
    re-run that also adds a customer, a backfill of an older date, a batch with a new customer,
    n_known_tokens unrecorded) leaves both paths' tables identical, and the reports agree."""
    stores = [make_store(fresh=True), make_store(fresh=True)]
    for s in stores:
        s.upgrade()
        s.promote(s.save_model(build_model()))
    version = stores[0].active_model_version()
    unrecorded = build_profile_batch(version, ["c1", "new"], as_of=D2, seed=5)
    unrecorded.n_known_tokens = None
    steps = [
        build_profile_batch(version, IDS, as_of=D1, seed=1),
        build_profile_batch(version, IDS[:3], as_of=D1, seed=2),  # a re-run of D1 with changes
        build_profile_batch(version, IDS[:3], as_of=D1, seed=2),  # identical: nothing changes
        build_profile_batch(version, IDS[2:5], as_of=D2, seed=3),
        # D2 again with changes and one more customer: history rows replaced and inserted, current
        # rows moved forward and rewritten in place, all in one batch
        build_profile_batch(version, IDS[1:4], as_of=D2, seed=6),
        build_profile_batch(version, IDS[2:5], as_of=D1, seed=4),  # a backfill: current rows stay
        unrecorded,
    ]
    reports: list[list[int]] = []
    for batch in steps:
        staged = stores[0].write_profiles(batch)
        few = stores[1].write_profiles(batch, few_rows=True)
        assert "parameters" in few.timings and "parameters" not in staged.timings
        counts = ("history_inserted", "history_replaced", "profiles_written")
        assert [getattr(few, c) for c in counts] == [getattr(staged, c) for c in counts]
        reports.append([getattr(few, c) for c in counts])
        (current_a, history_a), (current_b, history_b) = _tables(stores[0]), _tables(stores[1])
        assert history_a == history_b
        # updated_at is each transaction's start: compare which rows moved, not the instants
        assert [r[:-1] for r in current_a] == [r[:-1] for r in current_b]
    # inserted, replaced, current rows written: every kind of change occurs, alone and together
    assert reports == [[8, 0, 8], [0, 3, 3], [0, 0, 0], [3, 0, 3], [1, 2, 3], [0, 3, 0], [2, 0, 2]]
    big = build_profile_batch(
        version, [f"b{i}" for i in range(store_profiles.MAX_PARAMETER_ROWS + 1)], as_of=D2
    )
    assert "parameters" not in stores[1].write_profiles(big, few_rows=True).timings  # staged


def test_a_write_counts_events_and_reads_current_rows_in_its_transaction(
    store: Store, build_model: BuildModel, build_profile_batch: BuildBatch
) -> None:
    """``count_events`` and ``read_current`` answer, staged and with ``few_rows``, what
    ``event_counts`` and ``current_profiles`` read once the write has committed (a backfill
    included: the current row it leaves in place); without them the report holds neither."""
    from traitflow.events import LoadResult

    version = store.save_model(build_model())
    store.promote(version)
    events = pd.DataFrame(
        {
            "customer_id": ["c1", "c1", "c2"],
            "event_time": pd.to_datetime(["2024-01-01", "2024-01-02", "2024-01-02"], utc=True),
            "action": ["view"] * 3,
            "product_id": ["p1", "p2", "p1"],
        }
    )
    store.ingest_events(LoadResult(event_schema.as_canonical(events), event_schema.empty_rejects()), "s", "r")
    ids = ["c1", "c2", "c3"]
    for few_rows, as_of in ((False, D2), (True, D2), (True, D1)):  # the last one a backfill
        batch = build_profile_batch(version, ids, as_of=as_of, seed=int(few_rows))
        report = store.write_profiles(batch, few_rows=few_rows, count_events=True, read_current=True)
        assert report.event_counts == store.event_counts(ids) == {"c1": 2, "c2": 1}
        assert report.current_profiles is not None
        after = store.current_profiles(ids)
        assert report.current_profiles.keys() == after.keys()
        for customer, row in after.items():
            got = report.current_profiles[customer]
            assert row is not None and got is not None
            assert {k: v for k, v in got.items() if k != "embedding"} == {
                k: v for k, v in row.items() if k != "embedding"
            }
            assert np.array_equal(got["embedding"], row["embedding"])
        assert "current_profiles" not in report.to_dict()
    plain = store.write_profiles(build_profile_batch(version, ids, as_of=D2, seed=9), few_rows=True)
    assert plain.event_counts is None and plain.current_profiles is None
