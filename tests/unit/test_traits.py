import numpy as np
import pytest

from traitflow.config import TraitParams
from traitflow.model import TokenTable
from traitflow.pipeline import project_by_bucket
from traitflow.traits import (
    ProjectionSetup,
    distinctiveness,
    fit_traits,
    label_traits,
    match_traits,
    nmf_input,
    normalize_profiles,
    project,
    project_one,
    project_weights,
)
from traitflow.traits.labels import _distinct_labels
from traitflow.traits.projection import EPS, nonnegative_cd


def _planted(n: int = 600, d: int = 12, k: int = 4, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    basis = rng.normal(size=(k, d))
    segments = rng.integers(0, k, n)
    vectors = basis[segments] + 0.1 * rng.normal(size=(n, d))
    return vectors, segments


def test_projection_reproduces_fitted_profiles_of_training_customers():
    vectors, _ = _planted()
    fit = fit_traits(vectors, TraitParams(n_traits=4, max_iter=2000, tol=1e-8))
    # The fitted profile of a training customer is what projecting it later gives, batch or single.
    again = project(fit.traits, vectors)
    assert np.max(np.abs(again - fit.profiles)) <= 1e-3
    singles = np.array([project_one(fit.traits, v) for v in vectors[:50]])
    assert np.max(np.abs(singles - fit.profiles[:50])) <= 1e-3
    # And the batched NNLS agrees with sklearn's own W from the same factorization run in float64
    # (fit_traits runs it in float32).
    from sklearn.decomposition import NMF

    inputs = nmf_input(fit.traits.center, vectors)
    nmf = NMF(n_components=4, init="nndsvd", solver="cd", max_iter=2000, tol=1e-8, random_state=0)
    w = nmf.fit_transform(inputs)
    profiles_sklearn, _ = normalize_profiles(w, np.full(4, 0.25))
    assert np.max(np.abs(profiles_sklearn - fit.profiles)) <= 1e-3


def test_nmf_input_uses_the_stored_training_centre_not_a_per_customer_shift():
    vectors, _ = _planted()
    fit = fit_traits(vectors, TraitParams(n_traits=4))
    np.testing.assert_allclose(fit.traits.center, vectors.mean(axis=0))
    inputs = nmf_input(fit.traits.center, vectors[:3])
    assert inputs.shape == (3, 24) and np.all(inputs >= 0)
    np.testing.assert_allclose(inputs[:, :12] - inputs[:, 12:], vectors[:3] - fit.traits.center)
    # A customer vector moved by a constant is a different customer: the profile must change,
    # which a per-customer min-shift would hide.
    moved = vectors[:1] + 0.5
    assert not np.allclose(project(fit.traits, moved), project(fit.traits, vectors[:1]), atol=1e-3)


def test_profiles_are_normalized_and_recover_planted_segments():
    from sklearn.metrics import adjusted_rand_score

    vectors, segments = _planted()
    fit = fit_traits(vectors, TraitParams(n_traits=4))
    assert fit.profiles.shape == (600, 4)
    assert np.all(fit.profiles >= 0)
    np.testing.assert_allclose(fit.profiles.sum(axis=1), 1.0)
    assert adjusted_rand_score(segments, fit.profiles.argmax(axis=1)) >= 0.9


def test_project_weights_solves_nnls_exactly():
    from scipy.optimize import nnls

    rng = np.random.default_rng(1)
    components = rng.random((5, 9))
    targets = rng.random((40, 9))
    weights = project_weights(components, targets, tol=1e-10, max_iter=5000)
    exact = np.array([nnls(components.T, t)[0] for t in targets])
    np.testing.assert_allclose(weights, exact, atol=1e-6)


def _certified_rows(components: np.ndarray, truth: np.ndarray, margin: np.ndarray) -> np.ndarray:
    """Rows x whose projection (l1 = 0) is exactly ``truth``: ``x = w H + e`` with ``e`` orthogonal to
    the support's components and ``-H_j e = margin_j > 0`` for every component j off the support (a
    strictly positive gradient there), so w satisfies the KKT conditions and G = H H^T is positive
    definite. Unlike plain ``x = w H`` the clipped least-squares start is not already the answer."""
    rows = []
    for weights, delta in zip(truth, margin, strict=True):
        support = weights > 0
        basis, _ = np.linalg.qr(components[support].T)
        off = components[~support].T - basis @ (basis.T @ components[~support].T)  # (m, |F|)
        rows.append(weights @ components - off @ np.linalg.solve(off.T @ off, delta[~support]))
    return np.array(rows)


def _kkt_residual(components: np.ndarray, inputs: np.ndarray, weights: np.ndarray, l1: float) -> float:
    """Largest violation of the KKT conditions of the penalized problem, over all rows."""
    gradient = weights @ (components @ components.T) - (inputs @ components.T - l1)
    return float(np.max(np.where(weights > 0, np.abs(gradient), np.maximum(-gradient, 0.0))))


def test_project_weights_recovers_known_sparse_weights():
    rng = np.random.default_rng(7)
    k, m, n = 16, 128, 300  # the production shape: 16 traits on 2 x 64 features
    components = rng.random((k, m)) * (rng.random((k, m)) < 0.3)
    support = rng.random((n, k)) < 0.35
    support[np.arange(n), rng.integers(0, k, n)] = True
    truth = np.where(support, rng.uniform(0.05, 1.0, (n, k)), 0.0)
    inputs = _certified_rows(components, truth, margin=rng.uniform(0.5, 3.0, (n, k)))
    start = np.maximum(inputs @ components.T @ np.linalg.pinv(components @ components.T), 0.0)
    assert np.max(np.abs(start - truth)) > 0.1  # the solver has to move the supports
    weights = project_weights(components, inputs, batch_size=64)  # 5 batches of 60 rows
    np.testing.assert_allclose(weights, truth, atol=1e-5)
    assert np.all(weights[~support] == 0.0)
    assert _kkt_residual(components, inputs, weights, 0.0) <= 1e-4


def test_penalized_projection_matches_per_row_nnls():
    from scipy.linalg import solve_triangular
    from scipy.optimize import nnls

    rng = np.random.default_rng(11)
    k, m, n = 16, 128, 500
    components = rng.random((k, m)) * (rng.random((k, m)) < 0.3)
    truth = np.where(rng.random((n, k)) < 0.3, rng.uniform(0.05, 1.0, (n, k)), 0.0)
    inputs = truth @ components + 0.2 * rng.random((n, m))
    inputs[:3] = 0.0  # customers at the centre: all weights 0
    gram = components @ components.T
    l1 = 0.1 * float(np.mean(np.diag(gram)))
    weights = project_weights(components, inputs, l1_penalty=l1, batch_size=97)
    assert np.all(weights >= 0.0) and np.all(weights[:3] == 0.0)
    assert _kkt_residual(components, inputs, weights, l1) <= 1e-4
    # Exact per-row reference: with G = L L^T the penalized problem is the plain NNLS
    # min_{w>=0} ||L^T w - L^-1 (H x - l1)|| (as in project_one).
    lower = np.linalg.cholesky(gram)
    sample = rng.choice(n, 60, replace=False)
    exact = np.array(
        [nnls(lower.T, solve_triangular(lower, components @ inputs[i] - l1, lower=True))[0] for i in sample]
    )
    assert 0.2 < np.mean(exact == 0.0) < 0.9  # the penalty zeroes some weights, not all
    np.testing.assert_allclose(weights[sample], exact, atol=1e-5)


def test_project_weights_does_not_depend_on_batching():
    rng = np.random.default_rng(5)
    components = rng.random((6, 20))
    inputs = rng.random((250, 20))
    whole = project_weights(components, inputs, l1_penalty=0.3, tol=1e-10)
    batched = project_weights(components, inputs, l1_penalty=0.3, tol=1e-10, batch_size=7)
    np.testing.assert_allclose(batched, whole, atol=1e-8)
    assert project_weights(components, inputs[:0]).shape == (0, 6)


def _plain_coordinate_descent(
    gram: np.ndarray, rhs: np.ndarray, weights: np.ndarray, *, max_iter: int, tol: float
) -> np.ndarray:
    """``nonnegative_cd``'s rule written out with every view and derived matrix made where it is
    used: the reference its set-up kept per model and its views kept per set of rows must match
    to the bit."""
    n_rows, k = weights.shape
    diag = np.maximum(np.diag(gram), EPS)
    directions = np.ascontiguousarray((np.eye(k) - gram / diag).T)
    targets = np.empty((n_rows, k), order="F")
    np.divide(rhs, diag, out=targets)
    current = np.asfortranarray(weights, dtype=np.float64)
    active = np.arange(n_rows)
    before = np.empty_like(current)
    column = np.empty(n_rows)
    for sweep in range(1, max_iter + 1):
        if active.size == 0:
            break
        check = sweep % 3 == 0 or sweep == max_iter
        if check:
            np.copyto(before, current)
        for j in range(k):
            np.dot(current, directions[j], out=column)
            column += targets[:, j]
            np.maximum(column, 0.0, out=current[:, j])
        if not check:
            continue
        np.subtract(current, before, out=before)
        np.abs(before, out=before)
        going = before.max(axis=1) > tol * np.maximum(current.max(axis=1), 1.0)
        if 2 * int(np.count_nonzero(going)) > active.size:
            continue
        weights[active[~going]] = current[~going]
        active = active[going]
        current = np.asfortranarray(current[going])
        targets = np.asfortranarray(targets[going])
        before = np.empty_like(current)
        column = np.empty(len(active))
    weights[active] = current
    return weights


@pytest.mark.parametrize("n_rows", [1, 3, 2000])
def test_coordinate_descent_takes_the_plain_loops_steps_to_the_bit(n_rows: int) -> None:
    """One row, a few, and enough that converged rows drop out several times (views remade)."""
    rng = np.random.default_rng(n_rows)
    components = rng.random((7, 24))
    inputs = np.maximum(rng.normal(size=(n_rows, 24)), 0.0)
    gram, rhs = components @ components.T, inputs @ components.T
    start = np.maximum(rhs @ np.linalg.pinv(gram), 0.0)
    expected = _plain_coordinate_descent(gram, rhs, start.copy(), max_iter=60, tol=1e-9)
    np.testing.assert_array_equal(nonnegative_cd(gram, rhs, start.copy(), max_iter=60, tol=1e-9), expected)


def test_a_kept_projection_setup_projects_to_the_same_bits_as_one_built_per_call():
    vectors, _ = _planted(seed=4)
    traits = fit_traits(vectors, TraitParams(n_traits=4, sparsity=0.1)).traits
    setup = ProjectionSetup.of(traits.components)
    for rows in (slice(0, 1), slice(1, 4), slice(0, 600)):
        np.testing.assert_array_equal(project(traits, vectors[rows], setup), project(traits, vectors[rows]))
    buckets = np.arange(600) % 5
    kept = project_by_bucket(traits, vectors, buckets, setup)
    np.testing.assert_array_equal(kept, project_by_bucket(traits, vectors, buckets))
    for bucket in range(5):  # one setup for every bucket: each still projected on its own
        rows = buckets == bucket
        np.testing.assert_array_equal(kept[rows], project(traits, vectors[rows]))


def test_penalized_projection_matches_single_customer_solver():
    vectors, _ = _planted(seed=3)
    traits = fit_traits(vectors, TraitParams(n_traits=4, sparsity=0.2)).traits
    assert traits.l1_penalty > 0
    batch = project(traits, vectors[:100])
    singles = np.array([project_one(traits, v) for v in vectors[:100]])
    np.testing.assert_allclose(batch, singles, atol=1e-4)  # both converge to the one optimum


def test_fit_validates_inputs():
    with pytest.raises(ValueError, match="at least n_traits"):
        fit_traits(np.zeros((3, 4)), TraitParams(n_traits=4))
    with pytest.raises(ValueError, match="shape"):
        vectors, _ = _planted()
        project(fit_traits(vectors, TraitParams(n_traits=4)).traits, np.zeros((2, 5)))
    with pytest.raises(ValueError, match="exceeds the NMF input width"):
        fit_traits(np.random.default_rng(0).random((50, 3)), TraitParams(n_traits=7))
    with pytest.warns(UserWarning, match="exceeds the NMF input width"):
        fit_traits(np.random.default_rng(0).random((50, 3)), TraitParams(n_traits=7, init="random"))
    with pytest.raises(ValueError, match="NaN"):
        fit_traits(np.full((10, 4), np.nan), TraitParams(n_traits=2))


def test_match_traits_keeps_ids_of_permuted_traits_and_numbers_new_ones():
    rng = np.random.default_rng(0)
    previous = rng.dirichlet(np.ones(4) * 0.3, size=500)
    permutation = np.array([2, 0, 3, 1])
    new = previous[:, permutation].copy()
    new[:, 3] = rng.dirichlet(np.ones(4), size=500)[:, 0]  # new column 3 is unrelated to anything old
    ids, report = match_traits(previous, new, np.array([10, 11, 12, 13]), next_id=14)
    assert ids.tolist()[:3] == [12, 10, 13]
    assert ids[3] == 14
    assert report["retired_ids"] == [11]
    assert report["n_matched"] == 3


def test_components_learned_on_a_sample_still_project_every_customer():
    vectors, segments = _planted(n=2000)
    full = fit_traits(vectors, TraitParams(n_traits=4))
    sampled = fit_traits(vectors, TraitParams(n_traits=4, max_fit_customers=300))
    assert sampled.profiles.shape == (2000, 4)
    np.testing.assert_allclose(project(sampled.traits, vectors), sampled.profiles, atol=1e-6)
    from sklearn.metrics import adjusted_rand_score

    agreement = adjusted_rand_score(full.profiles.argmax(axis=1), sampled.profiles.argmax(axis=1))
    assert agreement >= 0.9
    assert adjusted_rand_score(segments, sampled.profiles.argmax(axis=1)) >= 0.9
    assert sampled.reconstruction_error <= full.reconstruction_error * 1.05


# ------------------------------------------------------------------------------------ labels


def _skewed_catalogue(seed: int = 0) -> tuple[TokenTable, np.ndarray, dict[str, int]]:
    """Tokens of 4 planted segments (2 categories of 10 products each, vectors near the segment's
    basis vector) plus one dominant category, ``best``, that every customer buys: its 20 products
    hold ~85% of all events and their vectors sit between the segments. One product of segment 0's
    direction has 2 events only. Customers are means of 30 token vectors, half of them ``best``.

    Returns (tokens, customer vectors (400, 12), {category: segment}).
    """
    rng = np.random.default_rng(seed)
    k, d = 4, 12
    basis = rng.normal(size=(k, d))
    vectors, categories, products, counts, owner = [], [], [], [], {}
    for s in range(k):
        for c in range(2):
            category = f"seg{s}_cat{c}"
            owner[category] = s
            for p in range(10):
                vectors.append(basis[s] + 0.3 * rng.normal(size=d))
                categories.append(category)
                products.append(f"{category}_p{p}")
                counts.append(int(rng.integers(20, 60)))
    for p in range(20):
        vectors.append(basis.mean(axis=0) + 0.3 * rng.normal(size=d))
        categories.append("best")
        products.append(f"best_p{p}")
        counts.append(int(rng.integers(1500, 2500)))
    vectors.append(1.5 * basis[0])
    categories.append("seg0_cat0")
    products.append("oneoff")
    counts.append(2)
    n = len(products)
    tokens = TokenTable(
        tokens=np.array([f"view_{p}" for p in products], dtype=object),
        actions=np.full(n, "view", dtype=object),
        product_ids=np.array(products, dtype=object),
        categories=np.array(categories, dtype=object),
        counts=np.array(counts, dtype=np.int64),
        vectors=np.array(vectors, dtype=np.float32),
    )
    best = np.flatnonzero(tokens.categories == "best")
    customers = []
    for i in range(400):
        own = np.flatnonzero([owner.get(c, -1) == i % k for c in categories])
        picked = np.concatenate([rng.choice(best, 15), rng.choice(own, 15)])
        customers.append(tokens.vectors[picked].mean(axis=0))
    return tokens, np.array(customers), owner


def test_labels_name_each_planted_segment_not_the_dominant_category():
    tokens, customers, owner = _skewed_catalogue()
    traits = fit_traits(customers, TraitParams(n_traits=4)).traits
    label_traits(traits, tokens)
    # What ranking by count-weighted loading (the former rule) gives here: the dominant category
    # first on every trait, so every label would start with it.
    loadings = project(traits, tokens.vectors) * tokens.counts[:, None]
    best_mass = loadings[tokens.categories == "best"].sum(axis=0)
    other_mass = [loadings[tokens.categories == c].sum(axis=0) for c in owner]
    assert np.all(best_mass > np.max(other_mass, axis=0))

    assert len(set(traits.labels)) == 4, traits.labels
    segments = []
    for label, categories in zip(traits.labels, traits.top_categories, strict=True):
        assert "best" not in label
        assert "best" not in categories[:2]
        first_two = {owner[c] for c in categories[:2]}
        assert len(first_two) == 1, categories  # both top categories of one planted segment
        segments.append(first_two.pop())
        assert label == " + ".join(categories[:2])
    assert sorted(segments) == [0, 1, 2, 3]  # each segment named by exactly one trait
    for products, segment in zip(traits.top_products, segments, strict=True):
        assert "oneoff" not in products  # 2 events: below the minimum support
        # Mostly the segment's products: a ``best`` product whose vector happens to lean towards
        # the segment may follow (it is over-represented there, at ~2.5x).
        assert all(p.startswith(f"seg{segment}_") for p in products[:2]), products
        assert sum(p.startswith(f"seg{segment}_") for p in products) >= 3, products


def test_labels_fall_back_to_product_names_without_categories():
    tokens, customers, _ = _skewed_catalogue(seed=1)
    tokens.categories = np.full(len(tokens), "", dtype=object)
    traits = fit_traits(customers, TraitParams(n_traits=4)).traits
    names = {p: f"name of {p}" for p in tokens.product_ids if not p.endswith("_p3")}
    label_traits(traits, tokens, product_names=names)
    assert traits.top_categories == [[] for _ in range(4)]
    assert len(set(traits.labels)) == 4
    for label, products in zip(traits.labels, traits.top_products, strict=True):
        assert not any(p.startswith("best") for p in products[:2])  # products stay ids
        assert label == " + ".join(names.get(p, p) for p in products[:2])
    label_traits(traits, tokens)  # no names: the ids
    assert traits.labels == [" + ".join(p[:2]) for p in traits.top_products]


def test_distinctiveness_is_a_shrunk_lift():
    # Two traits, four items: a popular item held in proportion, one over-represented on trait 0,
    # one on trait 1, and a tiny item held by trait 1 only.
    masses = np.array([[800.0, 800.0], [300.0, 100.0], [0.0, 200.0], [0.0, 2.0]])
    scores = distinctiveness(masses, prior_events=10.0)
    expected = np.outer(masses.sum(axis=1), masses.sum(axis=0)) / masses.sum()
    np.testing.assert_allclose(scores, (masses + 10.0) / (expected + 10.0))
    assert abs(scores[0, 0] - 1.0) < 0.03 and abs(scores[0, 1] - 1.0) < 0.03  # ~ the catalogue's share
    assert scores[1, 0] > 1.3 > 1.0 > scores[1, 1]
    assert scores[2, 1] > 1.8
    assert scores[3, 1] < 1.1  # raw lift 2, but two events: shrunk almost to 1
    with pytest.raises(ValueError, match="prior_events"):
        distinctiveness(masses, prior_events=0.0)


def test_labels_that_would_clash_take_further_terms():
    terms = [["a", "b", "c"], ["a", "b", "d"], ["e", "f"], ["e", "f"]]
    assert _distinct_labels(terms) == ["a + b + c", "a + b + d", "e + f", "e + f"]
    assert _distinct_labels([["x"], []]) == ["x", ""]
