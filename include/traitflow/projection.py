"""A deterministic 2-D map of customers in trait space, for charts (the Traits page, ``traitflow
report``).

Principal components of the profiles (rows summing to 1), with each component's sign fixed so
that its largest loading is positive: the same profiles always give the same picture, and a
re-run does not mirror it. UMAP, which the design mentions as an option, would need another
dependency and a seed-sensitive layout; two principal components already separate dominant traits
well enough to see their sizes and overlaps.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class TraitMap:
    """``coordinates`` (n, 2) float64 of the n customers; ``trait_axes`` (k, 2): where each trait's
    pure profile lands (for labelling the chart); ``explained`` (2,): share of the profiles'
    variance each axis holds."""

    coordinates: np.ndarray
    trait_axes: np.ndarray
    explained: np.ndarray


def trait_map(profiles: np.ndarray) -> TraitMap:
    """Project ``profiles`` (n, k), non-negative rows, onto their first two principal components.

    Fewer than two customers or traits give zeros in the missing axis (nothing to spread).
    """
    profiles = np.asarray(profiles, dtype=np.float64)
    if profiles.ndim != 2:
        raise ValueError(f"profiles must be a 2-D array (customers x traits), got shape {profiles.shape}")
    if profiles.size and (not np.all(np.isfinite(profiles)) or profiles.min() < 0):
        raise ValueError("profiles must be finite and non-negative")
    n, k = profiles.shape
    axes = np.zeros((k, 2))
    explained = np.zeros(2)
    if n >= 2 and k >= 1:
        mean = profiles.mean(axis=0)
        _, singular, vt = np.linalg.svd(profiles - mean, full_matrices=False)
        components = vt[:2]
        # Fix each component's sign: its largest absolute loading is positive.
        largest = np.argmax(np.abs(components), axis=1)
        components = components * np.sign(components[np.arange(len(components)), largest])[:, None]
        axes[:, : len(components)] = components.T
        variance = singular**2
        if variance.sum() > 0:
            explained[: len(components)] = variance[:2] / variance.sum()
        coordinates = (profiles - mean) @ axes
        trait_axes = (np.eye(k) - mean) @ axes
    else:
        coordinates = np.zeros((n, 2))
        trait_axes = np.zeros((k, 2))
    return TraitMap(coordinates=coordinates, trait_axes=trait_axes, explained=explained)
