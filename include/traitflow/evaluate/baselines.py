"""The category rankings the profile is compared with: global popularity and the customer's
categories carried through session co-occurrence."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import numpy as np
import pandas as pd
import scipy.sparse as sp

from traitflow.aggregate import event_weights
from traitflow.config import PipelineConfig
from traitflow.evaluate.metrics import EPS
from traitflow.ranking import cooccurrence_matrix as ranking_cooccurrence
from traitflow.ranking import item_matrix

# Categories are items like products: the same sparse builder and session co-occurrence.
_category_matrix = item_matrix


def cooccurrence_matrix(history: pd.DataFrame, config: PipelineConfig, index: pd.Index) -> sp.csr_matrix:
    """``P(c' | c)``: share of sessions holding category ``c`` that also hold ``c'``, shape (C, C).

    Sessions come from ``sessions.sessionize`` with the model's session parameters.
    """
    return ranking_cooccurrence(history, config.sessions, index, column="category")


def _category_counts(categories: np.ndarray, index: pd.Index) -> np.ndarray:
    """Events per category of ``index``, shape (C,)."""
    rows = np.zeros(len(categories), dtype=np.int64)
    return _category_matrix(rows, categories, index, np.ones(len(categories)), 1).toarray()[0]


def category_popularity(history: pd.DataFrame, index: pd.Index, actions: Sequence[str]) -> np.ndarray:
    """Scores of the categories of ``index``, shape (C,): target-action (``actions``) events per
    category, ties broken by all events (the fraction added is below 1)."""
    categories = history["category"].to_numpy(dtype=object)
    all_counts = _category_counts(categories, index)
    is_target = history["action"].isin(actions).to_numpy()
    target_counts = _category_counts(categories[is_target], index)
    return target_counts + all_counts / (all_counts.sum() + 1.0)


def customer_cooccurrence(
    history: pd.DataFrame,
    customer_ids: np.ndarray,
    index: pd.Index,
    config: PipelineConfig,
    split_at: datetime,
) -> sp.csr_matrix:
    """Scores of the categories of ``index`` for each of ``customer_ids`` (sorted), shape (n, C):
    the customer's action-weighted category distribution before ``split_at`` times ``P(c' | c)``."""
    test_history = history[history["customer_id"].isin(customer_ids)]
    weights = event_weights(test_history, config.aggregation, split_at)
    usage = _category_matrix(
        np.searchsorted(customer_ids, test_history["customer_id"].to_numpy(dtype=object)),
        test_history["category"].to_numpy(dtype=object),
        index,
        weights,
        len(customer_ids),
    )
    usage = sp.diags(1.0 / np.maximum(np.asarray(usage.sum(axis=1)).ravel(), EPS)) @ usage
    transition = cooccurrence_matrix(history, config, index)
    return (usage @ transition).tocsr()
