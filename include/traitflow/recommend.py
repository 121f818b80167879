"""Products for a customer: the profile's product ranking as served (CLI ``products``, API route).

The ranking is the one ``traitflow evaluate`` measures (``ranking.profile_product_scores``): the
customer's trait mixture ``P(p | c) = profile @ P(product | trait)`` over the model's stored trait
product distributions, tilted by the cosine of the customer's stored Item2Vec vector and each
product's vector (``ranking.product_vectors``). The products ranked are the model's: those some
trait's stored distribution lists, and those with a token. The stored distribution is laid out
over them as the evaluation lays it out (``product_eval.stored_weights``): a product no trait
lists gets the mixture's floor and ranks by similarity among such products.

What does not depend on the customer (the product index, the (k, P) distribution, the (P, d)
product vectors scaled to unit length) is built once per model version and kept with the loaded
model in the process's model cache (``ProductCatalog``, ``model_cache.load_catalog``): a saved
model never changes, so a request only scores its one customer against it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Final

import numpy as np
import pandas as pd

from traitflow.model_cache import load_catalog
from traitflow.product_eval import stored_weights
from traitflow.ranking import product_vectors, profile_product_scores_prenormalized, top_k, unit_item_vectors

if TYPE_CHECKING:
    from traitflow.model import TraitflowModel
    from traitflow.store import Store

MAX_N: Final = 500  # a trait keeps 500 products (trait_products.TOP_N): deeper lists rank by the floor


class NoProductRankingError(LookupError):
    """The model cannot rank products (saved without trait product distributions)."""


@dataclass(frozen=True)
class RecommendedProduct:
    """One ranked product: ``score`` is ``log P(p | c) + SIMILARITY_WEIGHT cos(x_c, v_p)``;
    ``had_events``: the customer has stored events on it (what ``new_only`` leaves out)."""

    rank: int
    product_id: str
    score: float
    name: str | None = None
    had_events: bool = False


@dataclass(frozen=True)
class ProductCatalog:
    """What a model's product ranking needs besides the customer, built once per model.

    product_ids : pd.Index of str, shape (P,), sorted -- the stored distribution's products and
        the token table's products
    distribution : ndarray of float64, shape (k, P) -- the stored ``P(product | trait)``, 0 for
        products no trait lists
    unit_vectors : ndarray of float64, shape (P, d) -- each product's count-weighted mean token
        vector (``ranking.product_vectors``) scaled to unit length (``ranking.unit_item_vectors``);
        zero for products without a token
    """

    product_ids: pd.Index
    distribution: np.ndarray
    unit_vectors: np.ndarray


@dataclass(frozen=True)
class CustomerProducts:
    """A customer's ranked products with the profile they come from and its evidence."""

    customer_id: str
    model_version: int
    as_of: datetime
    new_only: bool
    n_events: int
    cold_start: str
    n_known_tokens: int | None
    confidence: float | None
    products: list[RecommendedProduct]


def build_catalog(model: TraitflowModel) -> ProductCatalog:
    """The ``ProductCatalog`` of ``model``; raises ``NoProductRankingError`` without stored distributions.

    Served through the process's model cache (``model_cache.load_catalog``), once per version.
    """
    stored = model.traits.products
    if stored is None:
        raise NoProductRankingError(
            f"model version {model.version} was saved without trait product distributions:"
            " retrain to rank products"
        )
    tokens = model.tokens
    ids = np.concatenate(
        [np.asarray(stored.product_ids, dtype=object), np.asarray(tokens.product_ids, dtype=object)]
    )
    index = pd.Index(np.sort(pd.unique(ids)))
    return ProductCatalog(
        product_ids=index,
        distribution=stored_weights((stored.product_ids, stored.weights), model.traits.n_traits, index),
        unit_vectors=unit_item_vectors(
            product_vectors(tokens.product_ids, tokens.counts, tokens.vectors, index)
        ),
    )


def check_n(n: object) -> int:
    """``n`` as an int in 1..``MAX_N``, else ``ValueError`` saying what was wrong."""
    if isinstance(n, bool) or not isinstance(n, int | np.integer):
        raise ValueError(f"n must be an integer in 1..{MAX_N}, got {n!r}")
    if not 1 <= n <= MAX_N:
        raise ValueError(f"n must be in 1..{MAX_N}, got {n}")
    return int(n)


def rank_products(
    catalog: ProductCatalog,
    profile: np.ndarray,
    embedding: np.ndarray,
    n: int = 10,
    *,
    exclude: Sequence[str] | np.ndarray = (),
) -> list[RecommendedProduct]:
    """The ``n`` products of ``catalog`` that ``profile`` (k,) and ``embedding`` (d,) rank highest,
    best first.

    Scores are ``ranking.profile_product_scores`` over the catalog's products (the catalog's
    product vectors already scaled: only the customer's vector is normalised here); products in
    ``exclude`` (e.g. those the customer already had) are left out, so fewer than ``n`` come back
    only when the model has fewer products left. ``name`` is left None (the store knows names).
    """
    n = check_n(n)
    weights = np.asarray(profile, dtype=np.float64).reshape(1, -1)
    vector = np.asarray(embedding, dtype=np.float64).reshape(1, -1)
    if weights.shape[1] != catalog.distribution.shape[0]:
        raise ValueError(f"profile has {weights.shape[1]} traits, the model {catalog.distribution.shape[0]}")
    if vector.shape[1] != catalog.unit_vectors.shape[1]:
        raise ValueError(
            f"embedding has {vector.shape[1]} dimensions, the model {catalog.unit_vectors.shape[1]}"
        )
    scores = profile_product_scores_prenormalized(
        weights, catalog.distribution, vector, catalog.unit_vectors
    )(0, 1)
    if len(exclude):
        scores = scores.copy()
        dropped = catalog.product_ids.get_indexer(pd.Index(np.asarray(exclude, dtype=object)))
        scores[0, dropped[dropped >= 0]] = -np.inf
    top = top_k(scores, n)[0]
    top = top[np.isfinite(scores[0, top])]
    ids = catalog.product_ids[top]
    return [
        RecommendedProduct(rank=rank, product_id=str(p), score=float(s))
        for rank, (p, s) in enumerate(zip(ids, scores[0, top], strict=True), start=1)
    ]


def customer_products(
    store: Store, profile: Mapping[str, Any], n: int = 10, *, new_only: bool = False
) -> CustomerProducts:
    """The ranked products of a stored current profile (``Store.current_profile``'s dict), with
    names from the store and whether the customer had events on each.

    The model is the profile's own version (its traits are that model's), its catalog read
    through the process's model cache (``model_cache.load_catalog``). ``new_only`` leaves out
    the products the customer had any stored event on (discovery); without it they are ranked
    and marked ``had_events``.
    """
    n = check_n(n)
    version = int(profile["model_version"])
    catalog = load_catalog(store, version)
    customer_id = str(profile["customer_id"])
    seen = store.customer_product_ids(customer_id)
    ranked = rank_products(
        catalog,
        np.array([t["score"] for t in profile["traits"]], dtype=np.float64),
        profile["embedding"],
        n,
        exclude=seen if new_only else (),
    )
    had = set(seen)
    names = store.product_names([p.product_id for p in ranked])
    return CustomerProducts(
        customer_id=customer_id,
        model_version=version,
        as_of=profile["as_of"],
        new_only=new_only,
        n_events=int(profile["n_events"]),
        cold_start=str(profile["cold_start"]),
        n_known_tokens=profile.get("n_known_tokens"),
        confidence=profile.get("confidence"),
        products=[
            dataclasses.replace(p, name=names.get(p.product_id), had_events=p.product_id in had)
            for p in ranked
        ],
    )
