"""Trait labels, top categories and top products, ranked by distinctiveness (how much more a
trait holds an item than the catalogue does)."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from traitflow.model import TokenTable, TraitModel
from traitflow.traits.projection import EPS, project

# Distinctiveness of a label term (see ``label_traits``): the prior strength of the shrunk
# observed / expected ratio, in events: an item whose expected mass on a trait is a few events
# is pulled most of the way back to "no more than the catalogue" (ratio 1), so rare items cannot
# win on noise. Five events: an item with 5 events all on one of 4 traits (lift 4) scores 1.6,
# one with 50 events at lift 3 scores 2.5.
LABEL_PRIOR_EVENTS = 5.0
# Items (categories, products) with fewer events than this in the training window are never
# label terms or top items: a one-off product says nothing about a trait.
LABEL_MIN_EVENTS = 5


def distinctiveness(masses: np.ndarray, prior_events: float = LABEL_PRIOR_EVENTS) -> np.ndarray:
    """How much more each trait holds each item than the catalogue as a whole.

    ``masses[g, j]`` is the event mass of item g (a category or a product) on trait j. Under "the
    trait holds the item as often as the catalogue does", the expected mass is
    ``E[g, j] = T_j * C_g / C`` (trait total T_j, item total C_g, grand total C): the trait's share
    of item g divided by the item's share of the catalogue is the lift ``M / E``. The score is
    its posterior mean under a Gamma(prior_events, prior_events) prior (mean 1, the Poisson-Gamma
    shrinkage used for standardized ratios): ``(M + prior_events) / (E + prior_events)``. A large
    item needs a real excess to score high; a small one cannot score high on a few events; a
    popular item that every trait holds in proportion scores 1 on every trait.

    Parameters
    ----------
    masses : ndarray, shape (n_items, k), non-negative
    prior_events : float > 0

    Returns
    -------
    ndarray of float64, shape (n_items, k); > 1 where the trait over-represents the item
    """
    if prior_events <= 0:
        raise ValueError(f"prior_events must be > 0, got {prior_events}")
    masses = np.asarray(masses, dtype=np.float64)
    grand_total = max(float(masses.sum()), EPS)
    expected = np.outer(masses.sum(axis=1), masses.sum(axis=0)) / grand_total
    return (masses + prior_events) / (expected + prior_events)


def _ranked_terms(
    scores: np.ndarray, masses: np.ndarray, names: np.ndarray, eligible: np.ndarray, top_n: int
) -> tuple[list[list[str]], list[list[str]]]:
    """Per trait: the ``top_n`` eligible names by score (ties: larger mass first), and those of
    them the trait over-represents (score > 1), in the same order."""
    ranked: list[list[str]] = []
    distinctive: list[list[str]] = []
    for j in range(scores.shape[1]):
        order = np.lexsort((-masses[:, j], -scores[:, j]))
        order = order[eligible[order]][:top_n]
        ranked.append([str(names[i]) for i in order])
        distinctive.append([str(names[i]) for i in order if scores[i, j] > 1.0])
    return ranked, distinctive


def _distinct_labels(terms: list[list[str]], first: int = 2) -> list[str]:
    """``" + "``-joined label terms, ``first`` per trait, more for traits whose label would equal
    another's (as long as they have more terms): two traits share a label only when their ranked
    terms give nothing to tell them apart."""
    used = [min(first, len(t)) for t in terms]
    while True:
        labels = [" + ".join(t[:n]) for t, n in zip(terms, used, strict=True)]
        seen = pd.Series(labels)
        clash = seen.duplicated(keep=False).to_numpy()
        grow = clash & (np.array(used) < np.array([len(t) for t in terms]))
        if not grow.any():
            return labels
        used = [n + 1 if g else n for n, g in zip(used, grow, strict=True)]


def label_traits(
    traits: TraitModel,
    tokens: TokenTable,
    top_n: int = 5,
    *,
    product_names: Mapping[str, str] | None = None,
    prior_events: float = LABEL_PRIOR_EVENTS,
    min_events: int = LABEL_MIN_EVENTS,
) -> None:
    """Fill ``labels``, ``top_products`` and ``top_categories`` in place, by distinctiveness.

    Every token vector is projected as if it were a customer; its loadings (summing to 1) times
    its event count spread the token's events over the traits. Summed per category and per
    product this gives masses (items x k), scored by ``distinctiveness``: how much more the trait
    holds the item than the catalogue does. Ranking by raw loaded mass instead lets popularity
    win: on a skewed catalogue the same one or two most popular categories top every trait.

    ``top_categories`` / ``top_products``: the ``top_n`` items by score among those with at least
    ``min_events`` events (products stay ids: they are keys). The label joins the trait's first
    two over-represented (score > 1) categories, or products when no category is (or there are
    none), shown by name when ``product_names`` (product_id -> name) has one; a label that
    would equal another trait's gets that trait's next terms until they differ.
    """
    loadings = project(traits, tokens.vectors)  # (n_tokens, k)
    counts = np.asarray(tokens.counts, dtype=np.float64)
    weighted = loadings * counts[:, None]

    product_codes, product_ids = pd.factorize(np.asarray(tokens.product_ids, dtype=object))
    product_mass = np.zeros((len(product_ids), traits.n_traits))
    np.add.at(product_mass, product_codes, weighted)
    product_scores = distinctiveness(product_mass, prior_events)
    product_ok = product_mass.sum(axis=1) >= min_events
    traits.top_products, product_terms = _ranked_terms(
        product_scores, product_mass, np.asarray(product_ids, dtype=object), product_ok, top_n
    )

    has_category = np.asarray(tokens.categories, dtype=object) != ""
    category_codes, category_names = pd.factorize(np.asarray(tokens.categories, dtype=object)[has_category])
    category_mass = np.zeros((len(category_names), traits.n_traits))
    np.add.at(category_mass, category_codes, weighted[has_category])
    # Shares of the whole catalogue (products without a category included), so a category that
    # every trait holds in proportion scores 1 whatever else the catalogue holds.
    category_scores = _against_catalogue(category_mass, weighted.sum(axis=0), prior_events)
    category_ok = category_mass.sum(axis=1) >= min_events
    traits.top_categories, category_terms = _ranked_terms(
        category_scores, category_mass, np.asarray(category_names, dtype=object), category_ok, top_n
    )

    names = product_names or {}

    def named(ids: list[str]) -> list[str]:
        return [names.get(p) or p for p in ids]

    terms = [
        categories or named(products) or named(ranked)
        for categories, products, ranked in zip(
            category_terms, product_terms, traits.top_products, strict=True
        )
    ]
    traits.labels = _distinct_labels(terms)


def _against_catalogue(masses: np.ndarray, trait_totals: np.ndarray, prior_events: float) -> np.ndarray:
    """``distinctiveness`` of a subset of the catalogue's items: the expected masses use the
    catalogue's trait totals (shape (k,)) rather than the subset's."""
    catalogue = np.vstack([masses, np.maximum(trait_totals - masses.sum(axis=0), 0.0)[None, :]])
    return distinctiveness(catalogue, prior_events)[:-1]
