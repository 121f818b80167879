"""Traits: NMF on transformed customer vectors, batched non-negative projection, labels, stable ids.

NMF needs non-negative input. Customer vectors go through one fixed, stored transform: centre
on the training mean ``c`` and split each dimension into its positive and negative part,
``[max(x - c, 0), max(c - x, 0)]`` (2d non-negative features). Fitting and every later
projection apply the *same* stored centre, so a daily profile agrees with the weekly one (a
per-customer ``x - x.min()`` would not).

Why not a global offset ``x + max(0, -min x)``: then every customer carries the same large
offset, the factorization is far from unique (the offset can be spread over components in many
ways), and on planted data the dominant trait recovered segments at ARI 0.24 (16 segments) where
the split transform reaches 0.67 (k-means on the same vectors: 0.74). Traits also read better:
each describes how customers *differ* from the average customer.

``projection``: the transform and the projection of customer vectors onto fitted traits;
``fitting``: NMF, the anchored refit and stable trait ids (``match_traits``); ``labels``: labels
and top items by distinctiveness. Their public names are importable from ``traitflow.traits``.
"""

from __future__ import annotations

from traitflow.traits.fitting import REFIT_ANCHOR, TraitFit, fit_traits, match_traits
from traitflow.traits.labels import LABEL_MIN_EVENTS, LABEL_PRIOR_EVENTS, distinctiveness, label_traits
from traitflow.traits.projection import (
    ProjectionSetup,
    fit_center,
    nmf_input,
    normalize_profiles,
    project,
    project_one,
    project_weights,
)

__all__ = [
    "LABEL_MIN_EVENTS",
    "LABEL_PRIOR_EVENTS",
    "REFIT_ANCHOR",
    "ProjectionSetup",
    "TraitFit",
    "distinctiveness",
    "fit_center",
    "fit_traits",
    "label_traits",
    "match_traits",
    "nmf_input",
    "normalize_profiles",
    "project",
    "project_one",
    "project_weights",
]
