"""Fitting traits: NMF on the transformed customer vectors, a refit anchored on the previous
model's components, and stable trait ids across refits (``match_traits``)."""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
from scipy.optimize import linear_sum_assignment

from traitflow.config import ThinDataError, TraitParams
from traitflow.model import TraitModel
from traitflow.traits.projection import (
    EPS,
    fit_center,
    nmf_input,
    nonnegative_cd,
    normalize_profiles,
    project_weights,
)

# Strength of a refit's pull towards the previous model's components (see ``fit_traits``): the
# previous components weigh as much as this share of an average trait's evidence in the new data.
REFIT_ANCHOR = 0.1


@dataclass
class TraitFit:
    """Result of ``fit_traits``: the model (ids/labels still to be set) and the training profiles."""

    traits: TraitModel
    profiles: np.ndarray  # float64, shape (n, k)
    reconstruction_error: float  # relative Frobenius error of the NMF on its input matrix
    n_iter: int
    init: str = "nndsvd"  # params.init, or "previous" for a warm-started refit


def fit_traits(
    customer_vectors: np.ndarray,
    params: TraitParams,
    *,
    previous_components: np.ndarray | None = None,
    anchor: float = REFIT_ANCHOR,
) -> TraitFit:
    """Fit NMF with ``params.n_traits`` components on the transformed customer vectors.

    The returned profiles are the *projection* of each training customer on the fitted
    components, i.e. exactly what ``project`` gives later for the same vector.

    Without ``previous_components`` this is scikit-learn's NMF (``params.init``, coordinate
    descent). With them (a refit: the previous model's components, its token space aligned to
    the new one) the fit starts from those components and minimizes
    ``0.5 ||X - W H||^2 + l1 sum(W) + 0.5 lam ||H - H_prev||^2`` by alternating exact
    non-negative least squares, ``lam = anchor * mean(diag(W^T W))`` (the previous components
    count as ``anchor`` times an average trait's evidence), until the loss falls by less than
    ``params.tol`` (relative) per sweep. Why: at k = 16 the NMF has many near-equivalent optima;
    independent refits of the same behaviour with another Word2Vec seed kept only 10-14 of 16
    traits (profile correlation >= 0.9), a plain warm start 14-16, the anchored one 16 of 16
    (7 workloads), with a reconstruction error between 1.4% lower and 4.4% higher than the
    independent refit's. Genuine changes still move the traits: after a change of the planted
    segments the anchored refit recovered most of an independent refit's gain over keeping the
    old components (error 0.39-0.46 kept, 0.27-0.43 anchored, 0.26-0.41 independent).

    Parameters
    ----------
    customer_vectors : ndarray, shape (n, d), n >= n_traits
    previous_components : ndarray, shape (n_traits, 2d), optional
    anchor : float >= 0, used only with ``previous_components`` (0: plain warm start)
    """
    _check_fit_inputs(customer_vectors, params, previous_components, anchor)
    n = len(customer_vectors)
    center = fit_center(customer_vectors)
    matrix = nmf_input(center, customer_vectors)
    alpha_w = params.sparsity * float(np.sqrt(np.mean(matrix**2)))
    l1_penalty = matrix.shape[1] * alpha_w  # sklearn scales alpha_W by n_features
    # The components are learned on a uniform sample when there are many customers (the fit is
    # linear in customers and a few hundred thousand pin k components down); every customer is
    # then projected exactly.
    fit_matrix = matrix
    if n > params.max_fit_customers:
        sample = np.random.default_rng(params.random_state).choice(n, params.max_fit_customers, replace=False)
        fit_matrix = matrix[np.sort(sample)]
    if previous_components is None:
        components, n_iter = _sklearn_nmf(fit_matrix, params, alpha_w)
    else:
        components, n_iter = _anchored_refit(
            fit_matrix, previous_components, l1_penalty=l1_penalty, anchor=anchor, params=params
        )
    weights = project_weights(components, matrix, l1_penalty=l1_penalty)
    population_profile = np.full(params.n_traits, 1.0 / params.n_traits)
    profiles, _ = normalize_profiles(weights, population_profile)
    residual = np.linalg.norm(matrix - weights @ components) / max(float(np.linalg.norm(matrix)), EPS)
    traits = TraitModel(
        components=components,
        center=center,
        trait_ids=np.arange(1, params.n_traits + 1, dtype=np.int64),
        labels=[""] * params.n_traits,
        top_products=[[] for _ in range(params.n_traits)],
        top_categories=[[] for _ in range(params.n_traits)],
        population_profile=profiles.mean(axis=0),
        population_vector=customer_vectors.mean(axis=0).astype(np.float32),
        l1_penalty=l1_penalty,
    )
    return TraitFit(
        traits=traits,
        profiles=profiles,
        reconstruction_error=float(residual),
        n_iter=n_iter,
        init=params.init if previous_components is None else "previous",
    )


def _check_fit_inputs(
    customer_vectors: np.ndarray, params: TraitParams, previous_components: np.ndarray | None, anchor: float
) -> None:
    """Refuse what ``fit_traits`` cannot fit (too few customers, mismatched shapes, non-finite
    values); warn when ``n_traits`` exceeds the NMF input width."""
    n, d = customer_vectors.shape
    if n < params.n_traits:
        raise ThinDataError(f"need at least n_traits={params.n_traits} customers to fit traits, got {n}")
    if previous_components is not None and previous_components.shape != (params.n_traits, 2 * d):
        raise ValueError(
            f"previous_components must have shape ({params.n_traits}, {2 * d}), "
            f"got {previous_components.shape}"
        )
    if anchor < 0:
        raise ValueError(f"anchor must be >= 0, got {anchor}")
    if params.n_traits > 2 * d and previous_components is None:
        if params.init != "random":
            raise ValueError(
                f"n_traits={params.n_traits} exceeds the NMF input width 2 x {d}: init={params.init!r} "
                "cannot start from an SVD of rank n_traits; use init='random' or a smaller n_traits"
            )
        warnings.warn(
            f"n_traits={params.n_traits} exceeds the NMF input width 2 x {d}: components will be redundant",
            stacklevel=3,  # the caller of fit_traits
        )
    if not np.all(np.isfinite(customer_vectors)):
        raise ValueError("customer_vectors contains NaN or infinite values")


def _sklearn_nmf(matrix: np.ndarray, params: TraitParams, alpha_w: float) -> tuple[np.ndarray, int]:
    """scikit-learn NMF of ``matrix`` (n, m): components (k, m) float64 and iterations run."""
    from sklearn.decomposition import NMF

    nmf = NMF(
        n_components=params.n_traits,
        init=params.init,
        solver="cd",
        max_iter=params.max_iter,
        tol=params.tol,
        random_state=params.random_state,
        alpha_W=alpha_w,
        alpha_H=0.0,
        l1_ratio=1.0,
    )
    with warnings.catch_warnings():
        # Hitting max_iter is reported in the metrics (n_iter) rather than as a warning per fit.
        warnings.filterwarnings("ignore", message="Maximum number of iterations")
        # In float32 (scikit-learn keeps the input's precision): each sweep 1.3-1.6x faster, with
        # the same fit. Measured on 20K customers (k=16, 200 sweeps): components correlate 1.0000
        # with the float64 fit's, profiles within 1.3e-5, same reconstruction error and ARI.
        nmf.fit(matrix.astype(np.float32))
    return nmf.components_.astype(np.float64), int(nmf.n_iter_)


def _anchored_refit(
    matrix: np.ndarray, previous: np.ndarray, *, l1_penalty: float, anchor: float, params: TraitParams
) -> tuple[np.ndarray, int]:
    """Alternating NNLS from ``previous`` (k, m), each H step pulled towards it (see ``fit_traits``).

    The loss is tracked through k x k and m x k products only (no n x m residual per sweep):
    ``||X - W H||^2 = ||X||^2 - 2 <X^T W, H^T> + <W^T W, H H^T>``.

    Returns components (k, m) float64 and the number of sweeps.
    """
    previous = previous.astype(np.float64)
    components = previous.copy()
    squared_norm = float(np.einsum("ij,ij->", matrix, matrix))
    weights = project_weights(components, matrix, l1_penalty=l1_penalty)
    cross, gram = matrix.T @ weights, weights.T @ weights  # (m, k), (k, k)
    last_loss = np.inf
    sweeps = 0
    while sweeps < params.max_iter:
        sweeps += 1
        strength = anchor * float(np.mean(np.diag(gram)))
        components = nonnegative_cd(
            gram + strength * np.eye(len(gram)),
            cross + strength * previous.T,
            components.T.copy(),
            max_iter=500,
            tol=1e-7,
        ).T
        weights = project_weights(components, matrix, l1_penalty=l1_penalty)
        cross, gram = matrix.T @ weights, weights.T @ weights
        fit = squared_norm - 2.0 * float(np.sum(cross.T * components))
        fit += float(np.sum(gram * (components @ components.T)))
        loss = 0.5 * fit + l1_penalty * float(weights.sum())
        loss += 0.5 * strength * float(np.sum((components - previous) ** 2))
        if np.isfinite(last_loss) and last_loss - loss <= params.tol * abs(last_loss):
            break
        last_loss = loss
    return components, sweeps


def match_traits(
    previous_profiles: np.ndarray,
    new_profiles: np.ndarray,
    previous_ids: np.ndarray,
    *,
    next_id: int,
    min_similarity: float = 0.5,
) -> tuple[np.ndarray, dict]:
    """Give refitted traits the ids of the previous traits they correspond to.

    Both profile matrices describe the *same* customers (shape (n, k_prev) and (n, k_new)); trait
    ``i`` of the old model and ``j`` of the new one are the same trait when the same customers
    hold them, measured by the cosine between profile columns. An optimal one-to-one assignment
    (Hungarian) maximizes total similarity; pairs below ``min_similarity`` are not kept, and
    unmatched new traits get fresh ids from ``next_id`` upwards.

    Returns
    -------
    new_ids : ndarray of int64, shape (k_new,)
    report : dict with matched pairs, their similarities, new and retired ids
    """
    prev = previous_profiles - previous_profiles.mean(axis=0)
    new = new_profiles - new_profiles.mean(axis=0)
    similarity = (prev / np.maximum(np.linalg.norm(prev, axis=0), EPS)).T @ (
        new / np.maximum(np.linalg.norm(new, axis=0), EPS)
    )  # (k_prev, k_new)
    rows, cols = linear_sum_assignment(-similarity)
    new_ids = np.full(new_profiles.shape[1], -1, dtype=np.int64)
    pairs = []
    for i, j in zip(rows, cols, strict=True):
        if similarity[i, j] >= min_similarity:
            new_ids[j] = previous_ids[i]
            pairs.append(
                {
                    "trait_id": int(previous_ids[i]),
                    "new_position": int(j),
                    "similarity": float(similarity[i, j]),
                }
            )
    fresh = np.flatnonzero(new_ids < 0)
    new_ids[fresh] = np.arange(next_id, next_id + len(fresh))
    report = {
        "matched": pairs,
        "n_matched": len(pairs),
        "new_ids": [int(new_ids[j]) for j in fresh],
        "retired_ids": sorted(set(map(int, previous_ids)) - set(map(int, new_ids))),
        "min_similarity": min_similarity,
    }
    return new_ids, report
