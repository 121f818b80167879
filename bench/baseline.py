"""Reference implementations the pipeline is compared with.

* The seed-literal baseline: the naive code paths the design document warns about, written the
  way the seed wrote them. Aggregation looks every token up in a Python loop
  (``model.wv[token]``, a gensim ``KeyedVectors``) and takes ``np.mean`` per customer;
  projection calls ``scipy.optimize.nnls`` once per customer on a per-customer shifted vector
  (``x - x.min()``). Grouping and tokenizing are done with vectorized pandas (no per-row Python)
  so the baseline is not slower than it needs to be: only the per-token and per-customer loops
  the design calls out are naive.
* Standalone gensim: the exact ``Word2Vec(corpus_file=...)`` call of
  ``traitflow.item2vec.train_item2vec`` with the same parameters on the same corpus file, without
  anything around it, to measure the pipeline's Item2Vec overhead.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from scipy.optimize import nnls

from traitflow.config import Item2VecParams
from traitflow.item2vec import word2vec_arguments
from traitflow.model import TokenTable


def gensim_standalone(corpus_path: Path, params: Item2VecParams) -> int:
    """Train Word2Vec exactly as the pipeline does; returns the learned vocabulary size."""
    from gensim.models import Word2Vec

    model = Word2Vec(corpus_file=str(corpus_path), **word2vec_arguments(params))
    return len(model.wv)


def seed_keyed_vectors(tokens: TokenTable):
    """The trained vectors as a gensim ``KeyedVectors`` (what the seed's ``model.wv`` was)."""
    from gensim.models import KeyedVectors

    kv = KeyedVectors(vector_size=tokens.vector_size, count=len(tokens))
    kv.add_vectors([str(t) for t in tokens.tokens], tokens.vectors)
    return kv


def seed_aggregation(events: pd.DataFrame, wv) -> tuple[np.ndarray, np.ndarray]:
    """Seed-literal customer embeddings: per-token lookup in a Python loop, ``np.mean`` per customer.

    Returns (customer_ids sorted, embeddings (n, d) float32; customers without a known token get
    zeros).
    """
    tokens = events["action"].astype(str) + "_" + events["product_id"].astype(str)
    per_customer = tokens.groupby(events["customer_id"].to_numpy(), sort=True).agg(list)
    out = np.zeros((len(per_customer), wv.vector_size), dtype=np.float32)
    for i, customer_tokens in enumerate(per_customer.to_numpy()):
        vectors = [wv[token] for token in customer_tokens if token in wv]
        if vectors:
            out[i] = np.mean(vectors, axis=0)
    return per_customer.index.to_numpy(dtype=object), out


def seed_components(embeddings: np.ndarray, n_traits: int, random_state: int = 0) -> np.ndarray:
    """The seed's NMF components: fitted on per-customer shifted embeddings (not timed: the
    comparison is aggregation + projection, the NMF fit is a separate stage on both sides)."""
    import warnings

    from sklearn.decomposition import NMF

    shifted = embeddings - embeddings.min(axis=1, keepdims=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        nmf = NMF(n_components=n_traits, init="nndsvd", max_iter=200, random_state=random_state)
        nmf.fit(shifted)
    return nmf.components_


def seed_projection(components: np.ndarray, embeddings: np.ndarray) -> np.ndarray:
    """Seed-literal profiles: one ``nnls`` per customer on ``x - x.min()``, normalized to sum 1."""
    basis = components.T  # (d, k)
    out = np.zeros((len(embeddings), components.shape[0]))
    for i, x in enumerate(embeddings):
        weights, _ = nnls(basis, x - x.min())
        total = weights.sum()
        if total > 0:
            out[i] = weights / total
    return out
