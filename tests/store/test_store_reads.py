"""Consumer reads on hand-made profiles with known answers, the SQL view, and run reports."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest

from traitflow import event_schema
from traitflow.events import LoadResult
from traitflow.model import TraitflowModel
from traitflow.profile_batch import ProfileBatch
from traitflow.store import NotFoundError, Store, migrations
from traitflow.store.reads import StaleProfiles

BuildModel = Callable[..., TraitflowModel]
BuildBatch = Callable[..., ProfileBatch]
D1 = datetime(2024, 1, 10, tzinfo=UTC)

# Trait ids (3, 7, 11); dominant traits: a,d -> 3; b,e -> 7; c -> 11.
KNOWN = {
    "a": [0.7, 0.2, 0.1],
    "b": [0.1, 0.8, 0.1],
    "c": [0.2, 0.2, 0.6],
    "d": [0.6, 0.3, 0.1],
    "e": [0.1, 0.7, 0.2],
    "o'q;\"🛒": [0.05, 0.05, 0.9],
}
EVENTS = [40, 12, 25, 3, 60, 30]  # all at or above the default minimum evidence (3 events)
KNOWN_TOKENS = [38, 12, 20, 3, 55, 0]


@pytest.fixture
def known(store: Store, build_model: BuildModel, build_profile_batch: BuildBatch) -> int:
    version = store.save_model(build_model())
    store.promote(version)
    ids = list(KNOWN)
    batch = build_profile_batch(
        version, ids, as_of=D1, profiles=np.array([KNOWN[c] for c in ids], dtype=np.float64)
    )
    batch.n_events[:], batch.n_known_tokens[:] = EVENTS, KNOWN_TOKENS
    store.write_profiles(batch)
    return version


def _write_guess(store: Store, version: int, build_profile_batch: BuildBatch, profile: list[float]) -> None:
    """Customer ``guess``: one event (a known token), ``profile`` as its profile."""
    batch = build_profile_batch(version, ["guess"], as_of=D1, profiles=np.array([profile]))
    batch.n_events[:], batch.n_known_tokens[:], batch.cold_start[:] = 1, 1, "few_tokens"
    store.write_profiles(batch)


def test_top_customers_of_a_trait(store: Store, known: int) -> None:
    top = store.top_customers(7, n=2)
    assert top["customer_id"].tolist() == ["b", "e"]
    assert top["score"].tolist() == [0.8, 0.7]
    assert (top["model_version"] == known).all() and top["label"].str.startswith("trait 7 ").all()
    assert store.top_customers(11, n=10)["customer_id"].tolist() == ["o'q;\"🛒", "c", "e", "a", "b", "d"]
    assert store.top_customers(3, n=10, model_version=known)["customer_id"].tolist()[:2] == ["a", "d"]
    with pytest.raises(NotFoundError, match="trait 99"):
        store.top_customers(99)


def test_top_customers_leave_out_thin_evidence_unless_asked(
    store: Store, known: int, build_profile_batch: BuildBatch
) -> None:
    _write_guess(store, known, build_profile_batch, [0.95, 0.03, 0.02])  # would top trait 3
    top = store.top_customers(3, n=3)
    assert top["customer_id"].tolist() == ["a", "d", "c"]
    assert top["n_events"].tolist() == [40, 3, 25] and top["n_known_tokens"].tolist() == [38, 3, 20]
    np.testing.assert_allclose(top["confidence"].astype(float), [38 / 41, 3 / 6, 20 / 23])
    everyone = store.top_customers(3, n=3, min_events=1)
    assert everyone["customer_id"].tolist() == ["guess", "a", "d"]
    assert everyone["cold_start"].iloc[0] == "few_tokens" and everyone["confidence"].iloc[0] == 1 / 4
    assert store.top_customers(3, n=3, min_events=4)["customer_id"].tolist() == ["a", "c", "b"]
    with pytest.raises(ValueError, match="min_events"):
        store.top_customers(3, min_events=-1)


def test_the_view_answers_the_analyst_query(store: Store, known: int) -> None:
    rows = store.connection.execute(
        "SELECT customer_id, score FROM customer_trait_scores"
        " WHERE trait_id = 7 ORDER BY score DESC, customer_id"
    ).fetchall()
    assert rows[:3] == [("b", 0.8), ("e", 0.7), ("d", 0.3)]
    n = store.connection.execute("SELECT count(*) FROM customer_trait_scores").fetchone()
    assert n == (len(KNOWN) * 3,)


def test_traits_with_sizes(store: Store, known: int, build_model: BuildModel) -> None:
    traits = store.traits()
    assert traits["trait_id"].tolist() == [3, 7, 11]
    assert traits["size"].tolist() == [2, 2, 2]
    assert traits["position"].tolist() == [1, 2, 3]
    model = build_model()
    assert traits["label"].tolist() == model.traits.labels
    assert traits["top_products"].tolist() == model.traits.top_products
    assert traits["top_categories"].tolist() == model.traits.top_categories
    assert (traits["model_version"] == known).all()


def test_similar_customers_is_cosine_within_the_same_model(
    store: Store, known: int, build_model: BuildModel, build_profile_batch: BuildBatch
) -> None:
    # A customer profiled with another model must not appear, even with an identical profile.
    other = store.save_model(build_model(seed=3))
    store.write_profiles(
        build_profile_batch(
            other, ["other-model"], as_of=D1, profiles=np.array([KNOWN["a"]], dtype=np.float64)
        )
    )
    result = store.similar_customers("a", n=3)
    matrix = np.array(list(KNOWN.values()))
    unit = matrix / np.linalg.norm(matrix, axis=1, keepdims=True)
    cosine = unit @ unit[0]
    expected = sorted(((-cosine[i], cid) for i, cid in enumerate(KNOWN) if cid != "a"))[:3]
    assert result["customer_id"].tolist() == [cid for _, cid in expected]
    assert np.allclose(result["similarity"], [-s for s, _ in expected], rtol=0, atol=1e-12)
    assert result["customer_id"].tolist()[0] == "d"
    with pytest.raises(NotFoundError, match="no current profile"):
        store.similar_customers("nobody")


def test_similar_customers_leave_out_thin_evidence_unless_asked(
    store: Store, known: int, build_profile_batch: BuildBatch
) -> None:
    _write_guess(store, known, build_profile_batch, KNOWN["a"])  # cosine 1 with a
    assert "guess" not in store.similar_customers("a", n=10)["customer_id"].tolist()
    everyone = store.similar_customers("a", n=10, min_events=1)
    assert everyone["customer_id"].tolist()[0] == "guess"
    assert everyone["similarity"].iloc[0] == pytest.approx(1.0)
    first = everyone.iloc[0]
    assert (first["n_events"], first["n_known_tokens"], first["cold_start"]) == (1, 1, "few_tokens")
    assert len(everyone) == len(KNOWN)  # everyone but a
    # The thin customer itself still gets answers, from customers with enough evidence.
    assert store.similar_customers("guess", n=1)["customer_id"].tolist() == ["a"]
    evidence = store.similar_customers("a", n=10)
    assert evidence.set_index("customer_id")["n_known_tokens"].to_dict() == dict(
        zip(list(KNOWN)[1:], KNOWN_TOKENS[1:], strict=True)
    )
    with pytest.raises(ValueError, match="min_events"):
        store.similar_customers("a", min_events=1.5)


def test_current_profile_and_history_across_models(
    store: Store, known: int, build_model: BuildModel, build_profile_batch: BuildBatch
) -> None:
    profile = store.current_profile("c")
    assert profile is not None
    assert [(t["trait_id"], t["score"]) for t in profile["traits"]] == [(3, 0.2), (7, 0.2), (11, 0.6)]
    assert profile["dominant_trait_id"] == 11
    assert (profile["n_events"], profile["n_known_tokens"]) == (25, 20)
    assert profile["confidence"] == pytest.approx(20 / 23)
    # A retrain keeps traits 3 and 7, replaces 11 by a new trait 12.
    v2 = store.save_model(build_model(seed=4, trait_ids=(3, 7, 12)))
    store.promote(v2)
    later = D1 + timedelta(days=7)
    store.write_profiles(
        build_profile_batch(
            v2,
            ["c"],
            as_of=later,
            trait_ids=(3, 7, 12),
            profiles=np.array([[0.5, 0.25, 0.25]], dtype=np.float64),
        )
    )
    history = store.profile_history("c")
    assert list(history.columns) == [
        "as_of",
        "model_version",
        "dominant_trait_id",
        "n_events",
        "cold_start",
        "n_known_tokens",
        "trait_3",
        "trait_7",
        "trait_11",
        "trait_12",
    ]
    assert history["as_of"].tolist() == [pd.Timestamp(D1), pd.Timestamp(later)]
    assert history["model_version"].tolist() == [known, v2]
    np.testing.assert_array_equal(
        history[["trait_3", "trait_7", "trait_11", "trait_12"]].to_numpy(),
        [[0.2, 0.2, 0.6, np.nan], [0.5, 0.25, np.nan, 0.25]],
    )
    assert history["dominant_trait_id"].tolist() == [11, 3]
    assert store.profile_history("nobody").empty
    assert store.traits()["size"].tolist() == [1, 0, 0]  # active model v2: only c is profiled with it
    assert store.traits(model_version=known)["size"].tolist() == [2, 2, 1]


def test_current_profiles_label_each_row_with_its_own_models_traits(
    store: Store, known: int, build_model: BuildModel, build_profile_batch: BuildBatch
) -> None:
    """Rows under two model versions and a customer without one, read together: each row's traits
    carry its model's ids and labels in position order, as the models were saved."""
    v2_model = build_model(seed=4, trait_ids=(12, 3, 7))
    v2 = store.save_model(v2_model)
    store.promote(v2)
    store.write_profiles(
        build_profile_batch(
            v2,
            ["c"],
            as_of=D1 + timedelta(days=7),
            trait_ids=(12, 3, 7),
            profiles=np.array([[0.5, 0.3, 0.2]], dtype=np.float64),
        )
    )
    v1_labels = store.load_model(known).traits.labels
    profiles = store.current_profiles(["c", "nobody", "b"])
    assert list(profiles) == ["c", "nobody", "b"] and profiles["nobody"] is None
    c, b = profiles["c"], profiles["b"]
    assert c is not None and b is not None
    assert [(t["trait_id"], t["label"], t["score"]) for t in c["traits"]] == list(
        zip([12, 3, 7], v2_model.traits.labels, [0.5, 0.3, 0.2], strict=True)
    )
    assert (c["model_version"], c["dominant_trait_id"], c["dominant_label"]) == (
        v2,
        12,
        v2_model.traits.labels[0],
    )
    assert [(t["trait_id"], t["label"]) for t in b["traits"]] == list(zip([3, 7, 11], v1_labels, strict=True))
    assert (b["dominant_trait_id"], b["dominant_label"]) == (7, v1_labels[1])
    for customer, profile in (("c", c), ("b", b)):
        alone = store.current_profile(customer)
        assert alone is not None
        np.testing.assert_array_equal(alone.pop("embedding"), profile["embedding"])
        assert alone == {k: v for k, v in profile.items() if k != "embedding"}
    assert not {"_trait_ids", "_labels"} & set(c)


def test_reads_without_an_active_model(store: Store) -> None:
    with pytest.raises(NotFoundError, match="no active model"):
        store.traits()
    with pytest.raises(NotFoundError, match="no active model"):
        store.top_customers(7)
    with pytest.raises(NotFoundError, match="model version 5 does not exist"):
        store.traits(model_version=5)


def test_table_counts(store: Store, known: int) -> None:
    counts = store.table_counts()
    assert counts["customer_profiles"] == len(KNOWN) and "customer_embeddings" not in counts
    assert counts["customer_profile_history"] == len(KNOWN)
    assert counts["model_versions"] == 1 and counts["trait_components"] == 3 and counts["token_vectors"] == 8
    assert counts["events"] == 0 and counts["schema_migrations"] == migrations.latest_version()


def test_run_reports_replace_by_key(store: Store) -> None:
    store.write_run_report("daily", "2024-01-10", {"oov_rate": 0.1, "n": np.int64(3), "drift": float("nan")})
    store.write_run_report("weekly", "2024-W02", {"promoted": True})
    before = store.table_checksums()
    store.write_run_report("daily", "2024-01-10", {"oov_rate": 0.1, "n": 3, "drift": None})  # same content
    assert store.table_checksums() == before
    store.write_run_report("daily", "2024-01-10", {"oov_rate": 0.2})
    reports = store.run_reports("daily")
    assert len(reports) == 1 and reports[0]["report"] == {"oov_rate": 0.2}
    assert reports[0]["updated_at"] >= reports[0]["created_at"]
    assert {r["kind"] for r in store.run_reports()} == {"daily", "weekly"}
    assert len(store.run_reports(limit=1)) == 1
    assert store.run_reports("monthly") == []


def test_ten_kilobyte_report_strings_round_trip(store: Store) -> None:
    big = ("'; DROP TABLE run_reports; -- \\ \" 🧑‍🚀 " * 400)[:10_240]
    store.write_run_report("kind 'x'", big[:200], {"note": big, "nested": [big]})
    (report,) = store.run_reports("kind 'x'")
    assert report["run_key"] == big[:200] and report["report"] == {"note": big, "nested": [big]}


def test_stale_profiles_counts_events_no_current_profile_includes(
    store: Store, build_model: BuildModel, build_profile_batch: BuildBatch
) -> None:
    hour = timedelta(hours=1)
    assert store.newest_event_time() is None  # no events yet
    # a and b get profiles as of D1: a has older events only, b one more after D1; c has no
    # profile; d's only event is at D1 + 5h.
    rows = [
        ("a", D1 - 3 * hour),
        ("b", D1 - hour),
        ("b", D1 + hour),
        ("c", D1 - 2 * hour),
        ("d", D1 + 5 * hour),
    ]
    events = event_schema.as_canonical(
        pd.DataFrame(
            {
                "customer_id": [c for c, _ in rows],
                "event_time": pd.to_datetime([t for _, t in rows], utc=True),
                "action": "purchase",
                "product_id": "p1",
            }
        )
    )
    store.ingest_events(LoadResult(events, event_schema.empty_rejects()), source="unit", run_id="r1")
    assert store.newest_event_time() == D1 + 5 * hour
    # before any profile: every customer with an event before the instant
    assert store.stale_profiles(D1) == StaleProfiles(3, D1 - 3 * hour)
    version = store.save_model(build_model())
    store.promote(version, build_profile_batch(version, ["a", "b"], as_of=D1))

    stale = store.stale_profiles(D1 + 5 * hour)
    assert stale == StaleProfiles(2, D1 - 2 * hour)  # c (no profile) and b (event after D1)
    assert store.stale_profiles(D1) == StaleProfiles(1, D1 - 2 * hour)  # c only
    assert store.stale_profiles(D1 - 2 * hour) == StaleProfiles(0, None)  # a's and b's are included
    assert store.stale_profiles(D1 + 6 * hour) == StaleProfiles(3, D1 - 2 * hour)  # and d


def test_count_profiles_not_at_counts_rows_of_another_date_or_model(
    store: Store, build_model: BuildModel, build_profile_batch: BuildBatch
) -> None:
    first = store.save_model(build_model())
    assert store.count_profiles_not_at(D1, first) == 0  # no profiles at all
    store.promote(first, build_profile_batch(first, ["a", "b", "c"], as_of=D1))
    assert store.count_profiles_not_at(D1, first) == 0
    assert store.count_profiles_not_at(D1 + timedelta(days=1), first) == 3
    store.write_profiles(build_profile_batch(first, ["a"], as_of=D1 + timedelta(days=1)))
    assert store.count_profiles_not_at(D1 + timedelta(days=1), first) == 2  # b and c still at D1
    assert store.count_profiles_not_at(D1, first) == 1  # a moved on
    second = store.save_model(build_model())
    assert store.count_profiles_not_at(D1, second) == 3  # every row is under the first model


def test_reject_counts_by_source(store: Store) -> None:
    rejects = pd.DataFrame(
        {
            "source": ["f1", "f1", "f1", "f2"],
            "row_number": [1, 2, 3, 1],
            "raw": ["x", "y", "z", "w"],
            "reason": ["cancellation", "non_product", "cancellation", "non_product"],
        }
    )
    store.ingest_events(LoadResult(event_schema.empty_events(), rejects), source="f1", run_id="r1")
    assert store.reject_counts("f1") == {"cancellation": 2, "non_product": 1}
    assert list(store.reject_counts("f1")) == ["cancellation", "non_product"]  # most frequent first
    assert store.reject_counts("f2") == {"non_product": 1} and store.reject_counts("f3") == {}


def test_table_checksums_of_chosen_tables_without_chosen_columns_known_answer(store: Store) -> None:
    rows = [("p2", "Mug", "a.csv", "r1"), ("p1", "Tin", "b.csv", "r2")]
    for row in rows:
        store.connection.execute(
            "INSERT INTO product_names (product_id, product_name, source, run_id) VALUES (%s, %s, %s, %s)",
            row,
        )
    # Each row's text as PostgreSQL writes a record, hashed; the hashes sorted, joined and hashed.
    hashes = sorted(hashlib.md5(f"({','.join(row)})".encode()).hexdigest() for row in rows)
    expected = hashlib.md5("".join(hashes).encode()).hexdigest()
    chosen = store.table_checksums(("product_names", "no_such_table"), without=("updated_at",))
    assert chosen == {"product_names": expected}
    everything = store.table_checksums()
    store.connection.execute("UPDATE product_names SET updated_at = updated_at + interval '1 day'")
    assert store.table_checksums(("product_names",), without=("updated_at",)) == chosen
    assert store.table_checksums()["product_names"] != everything["product_names"]
