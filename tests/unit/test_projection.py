"""The 2-D trait map: known answers on profiles whose structure is planted."""

from __future__ import annotations

import numpy as np
import pytest

from traitflow.projection import trait_map


def test_customers_of_different_dominant_traits_land_apart() -> None:
    rng = np.random.default_rng(0)
    k = 3
    dominant = np.repeat(np.arange(k), 50)
    profiles = np.full((150, k), 0.05) + rng.uniform(0, 0.02, (150, k))
    profiles[np.arange(150), dominant] += 0.9
    profiles /= profiles.sum(axis=1, keepdims=True)
    result = trait_map(profiles)
    assert result.coordinates.shape == (150, 2) and result.trait_axes.shape == (k, 2)
    centres = np.array([result.coordinates[dominant == t].mean(axis=0) for t in range(k)])
    spread = max(result.coordinates[dominant == t].std(axis=0).max() for t in range(k))
    gaps = [np.linalg.norm(centres[a] - centres[b]) for a in range(k) for b in range(a + 1, k)]
    assert min(gaps) > 10 * spread
    # Each trait's pure profile lands beside its customers.
    for t in range(k):
        assert np.argmin(np.linalg.norm(centres - result.trait_axes[t], axis=1)) == t
    assert result.explained.sum() == pytest.approx(1.0)  # three traits: two axes hold it all


def test_the_map_is_deterministic_and_never_mirrored() -> None:
    rng = np.random.default_rng(1)
    profiles = rng.dirichlet(np.ones(5), size=200)
    first, again = trait_map(profiles), trait_map(profiles.copy())
    np.testing.assert_array_equal(first.coordinates, again.coordinates)
    # Flipping a component would mirror the picture; the sign rule pins it.
    flipped = trait_map(profiles[::-1])
    np.testing.assert_allclose(flipped.coordinates[::-1], first.coordinates, atol=1e-10)


def test_degenerate_inputs() -> None:
    assert trait_map(np.ones((1, 4)) / 4).coordinates.tolist() == [[0.0, 0.0]]
    assert trait_map(np.zeros((0, 3))).coordinates.shape == (0, 2)
    with pytest.raises(ValueError, match="non-negative"):
        trait_map(np.array([[0.5, -0.1], [0.2, 0.8]]))
    with pytest.raises(ValueError, match="2-D"):
        trait_map(np.ones(3))
