"""Single-customer profile updates in-process, with the model loaded once (sub-millisecond).

The batch path (``aggregate.customer_embeddings`` + ``traits.project``) is built for thousands of
customers; for one customer its pandas and Arrow set-up dominates (milliseconds).
``CustomerProfiler`` prepares everything that does not depend on the customer once -- token,
category and action row dictionaries, the stacked fallback matrix, the Cholesky factor of the
trait Gram matrix -- so one update is a few dict look-ups over that customer's events
(``resolve``), one small weighted mean and a k x k NNLS. It applies exactly the rules of the
batch path: ``resolve`` gives the lookup rows and weights ``customer_embeddings`` gives, and both
paths take the weighted mean with ``aggregate.weighted_means``, so the customer's vector is
bit-identical (tested). The event update path (``online_update``) uses ``resolve`` and then the
batch projection, so a posted profile is the daily run's.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import numpy as np
import pandas as pd
from scipy.linalg import solve_triangular
from scipy.optimize import nnls

from traitflow.aggregate import weighted_means
from traitflow.item2vec import FallbackVectors, fallback_vectors
from traitflow.model import TraitflowModel
from traitflow.profile_batch import (
    COLD_START_FEW_TOKENS,
    COLD_START_NO_HISTORY,
    COLD_START_NONE,
    profile_confidence,
)
from traitflow.traits import nmf_input

_MICROS_PER_DAY = 86_400 * 1_000_000


@dataclass(frozen=True)
class CustomerProfile:
    """profile : (k,) float64 summing to 1; vector : (d,) float32; cold_start : see profiles;
    n_events, n_known_tokens : the evidence (events, and those whose token the model knows)."""

    profile: np.ndarray
    vector: np.ndarray
    cold_start: str
    n_events: int = 0
    n_known_tokens: int = 0

    @property
    def confidence(self) -> float:
        """``profiles.profile_confidence`` of ``n_known_tokens``."""
        return float(profile_confidence(np.array([self.n_known_tokens]))[0])


@dataclass(frozen=True)
class ResolvedEvents:
    """One customer's n events resolved against a model's lookup matrix, as the batch path does.

    rows : ndarray of int64, shape (n,) -- each event's row of the lookup matrix
    weights : ndarray of float64, shape (n,) -- action weight times recency decay; 0 for an
        event that resolved to the zero row or has an unknown action
    n_known_tokens : events whose token the model knows (counted also when ``few_tokens``)
    few_tokens : fewer than ``min_tokens`` events: rows come from category averages
    """

    rows: np.ndarray
    weights: np.ndarray
    n_known_tokens: int
    few_tokens: bool

    @property
    def cold_start(self) -> str:
        """The profile's cold-start flag (``profile_batch.COLD_START_VALUES``)."""
        if not self.weights.sum() > 0:
            return COLD_START_NO_HISTORY
        return COLD_START_FEW_TOKENS if self.few_tokens else COLD_START_NONE


class CustomerProfiler:
    """Profiles one customer at a time under a fixed model (see the module docstring)."""

    def __init__(self, model: TraitflowModel, fallback: FallbackVectors | None = None) -> None:
        """``fallback``: ``item2vec.fallback_vectors(model.tokens)`` when the caller keeps it
        (``model_cache``); built here otherwise."""
        tokens, traits, config = model.tokens, model.traits, model.config
        fallback = fallback if fallback is not None else fallback_vectors(tokens)
        self.matrix = fallback.matrix
        self._token_row = {str(token): row for row, token in enumerate(tokens.tokens)}
        self._category_row = {
            str(c): row + fallback.category_offset for row, c in enumerate(fallback.category_index)
        }
        self._action_row = {
            str(a): row + fallback.action_offset for row, a in enumerate(fallback.action_index)
        }
        self._zero_row = fallback.zero_row
        self._action_weight = dict(config.aggregation.action_weights)
        self._min_tokens = config.aggregation.min_tokens
        self._half_life = config.aggregation.recency_half_life_days
        self._token_format = config.sessions.token_scheme.replace("{action}", "{0}").replace(
            "{product_id}", "{1}"
        )
        self._traits = traits
        gram = traits.components @ traits.components.T
        # Same regularisation as traits.project_one, factored once instead of per call.
        self._lower = np.linalg.cholesky(gram + 1e-12 * np.trace(gram) * np.eye(len(gram)))

    def profile(
        self,
        actions: Sequence[str],
        product_ids: Sequence[str],
        categories: Sequence[str | None],
        event_times: np.ndarray | None = None,
        *,
        as_of: datetime | None = None,
    ) -> CustomerProfile:
        """Profile from one customer's events (all before ``as_of``; the caller selects them).

        Parameters
        ----------
        actions, product_ids, categories : sequences of length n (category may be None/NaN)
        event_times : ndarray of datetime64, shape (n,) -- needed only with a recency half-life
        """
        resolved = self.resolve(actions, product_ids, categories, event_times, as_of=as_of)
        n = len(actions)
        vectors, has_vector = weighted_means(
            np.zeros(n, dtype=np.int64), resolved.rows, resolved.weights, 1, self.matrix
        )
        if not has_vector[0]:
            return CustomerProfile(
                self._traits.population_profile.copy(),
                self._traits.population_vector.copy(),
                COLD_START_NO_HISTORY,
                n,
                resolved.n_known_tokens,
            )
        return CustomerProfile(
            self._project(vectors[0]), vectors[0], resolved.cold_start, n, resolved.n_known_tokens
        )

    def resolve(
        self,
        actions: Sequence[str],
        product_ids: Sequence[str],
        categories: Sequence[str | None],
        event_times: np.ndarray | None = None,
        *,
        as_of: datetime | None = None,
    ) -> ResolvedEvents:
        """The lookup rows and weights of one customer's events (``profile``'s parameters): what
        ``aggregate.customer_embeddings`` gives for them, for ``aggregate.weighted_means``."""
        n = len(actions)
        if not len(product_ids) == len(categories) == n:
            raise ValueError("actions, product_ids and categories must have the same length")
        few_tokens = 0 < n < self._min_tokens
        rows = np.empty(n, dtype=np.int64)
        weights = np.empty(n, dtype=np.float64)
        n_known = 0
        # A Python loop over this one customer's events: dict look-ups beat numpy set-up at this size.
        for i, (action, product, category) in enumerate(zip(actions, product_ids, categories, strict=True)):
            row = self._token_row.get(self._token_format.format(action, product), -1)
            n_known += row >= 0
            if few_tokens:
                row = -1
            if row < 0 and isinstance(category, str):
                row = self._category_row.get(category, -1)
            if row < 0:
                row = self._action_row.get(action, self._zero_row)
            rows[i] = row
            weights[i] = 0.0 if row == self._zero_row else self._action_weight.get(action, 0.0)
        if self._half_life is not None and n:
            if event_times is None or as_of is None:
                raise ValueError("recency weighting needs event_times and as_of")
            reference = pd.Timestamp(as_of).value // 1_000  # ns -> us
            ages = np.maximum(reference - np.asarray(event_times, dtype="datetime64[us]").astype(np.int64), 0)
            # The batch path's arithmetic (aggregate.event_weights), operation for operation.
            weights = weights * np.exp2(-(ages / _MICROS_PER_DAY) / self._half_life)
        return ResolvedEvents(rows, weights, int(n_known), few_tokens)

    def _project(self, vector: np.ndarray) -> np.ndarray:
        traits = self._traits
        rhs = traits.components @ nmf_input(traits.center, vector[None, :])[0] - traits.l1_penalty
        weights, _ = nnls(self._lower.T, solve_triangular(self._lower, rhs, lower=True))
        total = weights.sum()
        return weights / total if total > 1e-12 else traits.population_profile.copy()
