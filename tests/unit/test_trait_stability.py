"""Stable trait ids across refits ("profiles users can trust").

Acceptance: two refits with different Word2Vec seeds on the same events keep >= 90% of the
trait ids matched with similarity >= 0.9, at the default k = 16.

"Similarity" (the issue's "cosine") is what ``traits.match_traits`` reports, unchanged: the
cosine between *mean-centred profile columns* (i.e. the Pearson correlation over customers) of
the same training customers -- the previous model's traits projected on the new, Procrustes-
aligned customer vectors versus the refitted model's profiles. Two traits are "the same" when
the same customers hold them to the same degree.

Workload: the quickstart sample's shape (``SyntheticSpec`` defaults: 1,000 customers, 500
products in 20 categories, 6 planted segments) with ~40K events; Item2Vec at its defaults
(d = 64, 10 epochs) with ``workers=1`` (bit-reproducible), seeds 1 and 2.

Measured (this workload, data seeds 0..6): the refit through ``pipeline.fit_model(previous=...)``
-- warm-started from the previous components, anchored with ``traits.REFIT_ANCHOR`` -- keeps
16 of 16 ids with similarity >= 0.9 for every seed (lowest 0.938, typically >= 0.99); an
independent NMF refit (``warm_start=False``) keeps only 10-14 of 16.
"""

from __future__ import annotations

import dataclasses
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest

from traitflow.alignment import align_tokens
from traitflow.config import Item2VecParams, PipelineConfig, TraitParams
from traitflow.model import TraitflowModel
from traitflow.pipeline import build_corpus, events_before, fit_model, train_tokens
from traitflow.synthetic import SyntheticData, SyntheticSpec, generate
from traitflow.traits import fit_traits, match_traits, project

SPEC = SyntheticSpec(n_events=40_000, seed=0)
CONFIG_A = PipelineConfig(item2vec=Item2VecParams(workers=1, seed=1))
CONFIG_B = dataclasses.replace(CONFIG_A, item2vec=Item2VecParams(workers=1, seed=2))
END = SPEC.start + timedelta(days=SPEC.days)


@pytest.fixture(scope="module")
def refits(tmp_path_factory: pytest.TempPathFactory) -> tuple[SyntheticData, TraitflowModel, TraitflowModel]:
    """Model A (seed 1, fresh fit) and model B (seed 2, aligned to A, refitted with previous=A)."""
    data = generate(SPEC)
    events = events_before(data.events, END)
    corpus = build_corpus(events, CONFIG_A.sessions, tmp_path_factory.mktemp("corpus"))
    model_a = fit_model(events, train_tokens(corpus, CONFIG_A), CONFIG_A, END)
    tokens_b = align_tokens(train_tokens(corpus, CONFIG_B), model_a.tokens)
    model_b = fit_model(events, tokens_b, CONFIG_B, END, previous=model_a)
    return data, model_a, model_b


def test_refits_with_different_seeds_keep_90_percent_of_trait_ids(refits):
    _, model_a, model_b = refits
    k = TraitParams().n_traits
    assert model_a.traits.n_traits == model_b.traits.n_traits == k == 16
    report = model_b.trait_match
    similarity = {pair["trait_id"]: pair["similarity"] for pair in report["matched"]}
    print(
        f"\nk={k}: {report['n_matched']} matched, per trait id: "
        + ", ".join(f"{i}: {similarity.get(i, float('nan')):.3f}" for i in range(1, k + 1))
        + f"; refit {model_b.metrics['traits']}"
    )
    kept = [trait_id for trait_id, value in similarity.items() if value >= 0.9]
    assert len(kept) >= 0.9 * k  # measured 16 of 16, lowest 0.994
    # Kept ids are the previous model's ids, at the positions of the traits they matched.
    for pair in report["matched"]:
        assert model_b.traits.trait_ids[pair["new_position"]] == pair["trait_id"]
    assert model_b.metrics["traits"]["init"] == "previous"


def test_matched_traits_describe_the_same_categories(refits):
    _, model_a, model_b = refits
    same = 0
    for position, trait_id in enumerate(model_b.traits.trait_ids):
        before = int(np.flatnonzero(model_a.traits.trait_ids == trait_id)[0])
        same += model_a.traits.top_categories[before][0] == model_b.traits.top_categories[position][0]
    assert same >= 0.9 * model_a.traits.n_traits


def test_independent_refit_is_less_stable_than_the_anchored_one(refits):
    """Documents why refits start from the previous components: an independent NMF refit of the
    same behaviour lands on another of k=16's near-equivalent factorizations."""
    data, model_a, model_b = refits
    fresh = fit_model(data.events, model_b.tokens, CONFIG_B, END, previous=model_a, warm_start=False)
    fresh_kept = sum(pair["similarity"] >= 0.9 for pair in fresh.trait_match["matched"])
    anchored_kept = sum(pair["similarity"] >= 0.9 for pair in model_b.trait_match["matched"])
    print(f"\nids kept at >= 0.9: anchored refit {anchored_kept}/16, independent refit {fresh_kept}/16")
    assert fresh.metrics["traits"]["init"] == "nndsvd"
    assert anchored_kept >= fresh_kept
    # Stability costs little fit: independent fits of k=16 differ by a few percent in
    # reconstruction error anyway (without recency weighting, over data seeds 0..6: -1.4% ..
    # +4.4%; with the default 30-day half-life, here +5.2%).
    anchored_error = model_b.metrics["traits"]["reconstruction_error"]
    fresh_error = fresh.metrics["traits"]["reconstruction_error"]
    print(f"reconstruction error: anchored {anchored_error:.4f}, independent {fresh_error:.4f}")
    assert anchored_error <= 1.07 * fresh_error


# ------------------------------------------------------------------------------ fit_traits units


def _vectors(seed: int, n: int = 400, d: int = 8) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(4, d))
    return (centres[rng.integers(0, 4, n)] + 0.3 * rng.normal(size=(n, d))).astype(np.float32)


def test_refit_from_own_components_on_the_same_vectors_keeps_them():
    vectors = _vectors(0)
    params = TraitParams(n_traits=4)
    fit = fit_traits(vectors, params)
    again = fit_traits(vectors, params, previous_components=fit.traits.components)
    assert again.init == "previous"
    _, report = match_traits(fit.profiles, again.profiles, np.arange(1, 5), next_id=5)
    assert report["n_matched"] == 4 and min(p["similarity"] for p in report["matched"]) > 0.99
    assert again.reconstruction_error <= fit.reconstruction_error * 1.01


def test_anchored_refit_moves_towards_new_data():
    """On changed data the refit iterates and fits clearly better than the kept components."""
    params = TraitParams(n_traits=4)
    old = fit_traits(_vectors(0), params)
    new_vectors = _vectors(1)
    refit = fit_traits(new_vectors, params, previous_components=old.traits.components, anchor=0.1)
    assert refit.n_iter > 1
    kept = fit_traits(new_vectors, params, previous_components=old.traits.components, anchor=1e6)
    assert refit.reconstruction_error < kept.reconstruction_error
    # Profiles stay non-negative, normalized, and equal to projecting the training vectors.
    np.testing.assert_allclose(refit.profiles.sum(axis=1), 1.0, atol=1e-9)
    np.testing.assert_allclose(project(refit.traits, new_vectors), refit.profiles, atol=1e-6)


def test_refit_validates_previous_components():
    vectors = _vectors(0)
    with pytest.raises(ValueError, match="previous_components must have shape"):
        fit_traits(vectors, TraitParams(n_traits=4), previous_components=np.ones((3, 16)))
    with pytest.raises(ValueError, match="anchor must be >= 0"):
        fit_traits(vectors, TraitParams(n_traits=4), previous_components=np.ones((4, 16)), anchor=-1)


def test_refit_with_another_k_fits_from_scratch(refits, tmp_path: Path):
    data, model_a, model_b = refits
    config = dataclasses.replace(CONFIG_B, traits=TraitParams(n_traits=8))
    other = fit_model(data.events, model_b.tokens, config, END, previous=model_a)
    assert other.metrics["traits"]["init"] == "nndsvd"
    assert other.traits.n_traits == 8 and len(set(other.traits.trait_ids)) == 8
