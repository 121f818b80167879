"""Offline evaluation: do trait profiles predict what customers do next, and do they stay put?

A time-split hold-out. The model is trained (``pipeline.train``) on events before the split
instant ``T``; customers with history before ``T`` who buy after it are the test set. Each
method ranks the categories known before ``T`` for each test customer, and the ranking is scored
against the categories the customer actually bought after ``T``:

* profile: ``score_c = sum_j profile_j * share_j(c)``, where ``share_j(c)`` is trait ``j``'s
  share of category ``c`` -- every token is projected on the traits like a customer, and
  ``share_j(c)`` is the count-weighted loading mass of ``c``'s tokens on ``j`` divided by ``j``'s
  total (``category_shares``). Read as a mixture: ``P(c | customer) = sum_j P(j | customer) P(c | j)``;
* popularity: global category popularity before ``T`` (target-action events, ties broken by all
  events) -- the same ranking for everyone;
* co-occurrence: ``score_c' = sum_c u_c P(c' | c)``, ``u`` the customer's action-weighted
  category distribution before ``T`` and ``P(c' | c)`` the share of pre-``T`` sessions holding
  ``c`` that also hold ``c'`` (``P(c | c) = 1``: own categories count fully).

Metrics: hit rate@K (share of customers with at least one bought category in the top K) and
NDCG@10 (binary relevance). Categories first seen after ``T`` cannot be ranked by any method and
count as misses for all. The target is purchases; when fewer than ``min_customers`` customers
purchase after ``T`` (sparse exports), carts and purchases together are the target, and the
report says so. ``target`` ("purchase", "cart", "any") picks it explicitly.

Products are ranked the same way (``traitflow.product_eval``; no categories needed): the
profile mixture through the model's stored ``P(product | trait)`` (``traitflow.trait_products``),
tilted by the Item2Vec similarity of the customer's vector and each product's
(``ranking.profile_product_scores``; the mixture alone is reported as ``profile_traits``), against
popularity, product co-occurrence in sessions and the customer's own history (a ceiling
for repeat buying), on all products and on products new to the customer, with hit@5, hit@10,
recall@50 and NDCG@10. Every ranking metric and the profile's lift over popularity come with a
bootstrap 95% interval over customers (``traitflow.bootstrap``).

Also reported: Item2Vec next-item hit rate@10 on post-``T`` sessions (``quality``) next to a
"10 most frequent tokens" baseline; silhouette and ARI of profiles on planted segments (when a
segments file is given); category purity of each trait's top products; profile stability for
customers without new events across a retrain (another Word2Vec seed, a slightly longer window,
trait ids matched through ``pipeline.fit_model(previous=...)``); and, for the choice of k,
reconstruction error, purity, silhouette and hit@10 over a range of k (each k's traits refitted
and its rankings re-made with its own profiles).

``evaluate`` runs everything from raw events (the CLI's ``traitflow evaluate``);
``evaluate_model`` scores an already trained model on a history/future pair (what a quality
gate would call). Every per-customer computation is a sparse or dense matrix product, batched
over customers.

Modules: ``split`` (the time split, the target), ``profiles`` (every history customer's profile
as of the split), ``categories`` (the category ranking), ``baselines`` (popularity and
co-occurrence), ``metrics`` (ranking means, purity, next-item, segments), ``stability`` (the
retrain check), ``sweep`` (the choice of k), ``driver`` (``evaluate``, ``evaluate_model``) and
``report`` (text and JSON).
"""

# The underscored names are re-exported (``name as name``) for the tests and bench/retail_ranking.py.
from traitflow.evaluate.baselines import cooccurrence_matrix
from traitflow.evaluate.categories import _category_index as _category_index
from traitflow.evaluate.categories import _targets as _targets
from traitflow.evaluate.categories import category_ranking, category_shares
from traitflow.evaluate.driver import evaluate, evaluate_model, product_sections
from traitflow.evaluate.metrics import (
    NDCG_K,
    PURITY_TOP_N,
    RANK_KS,
    next_item_report,
    ranking_metrics,
    segment_report,
    trait_purity,
)
from traitflow.evaluate.profiles import _profile_all as _profile_all
from traitflow.evaluate.report import format_report, write_json
from traitflow.evaluate.split import (
    AUTO_TARGETS,
    MIN_CUSTOMERS,
    TARGET_ACTIONS,
    EvaluationError,
    Split,
    choose_target,
    split_events,
)
from traitflow.evaluate.stability import STABILITY_EXTENSION, profile_change, stability_report
from traitflow.evaluate.sweep import DEFAULT_K_RANGE, k_selection

__all__ = [
    "AUTO_TARGETS",
    "DEFAULT_K_RANGE",
    "MIN_CUSTOMERS",
    "NDCG_K",
    "PURITY_TOP_N",
    "RANK_KS",
    "STABILITY_EXTENSION",
    "TARGET_ACTIONS",
    "EvaluationError",
    "Split",
    "category_ranking",
    "category_shares",
    "choose_target",
    "cooccurrence_matrix",
    "evaluate",
    "evaluate_model",
    "format_report",
    "k_selection",
    "next_item_report",
    "product_sections",
    "profile_change",
    "ranking_metrics",
    "segment_report",
    "split_events",
    "stability_report",
    "trait_purity",
    "write_json",
]
