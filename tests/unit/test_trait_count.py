"""The thin-data rule for the number of traits (``config.check_trait_count``) and where it applies."""

from __future__ import annotations

import pandas as pd
import pytest

from traitflow.config import ConfigError, PipelineConfig, check_trait_count
from traitflow.pipeline import build_corpus, fit_model, train_tokens
from traitflow.synthetic import SyntheticSpec, generate


@pytest.mark.parametrize(
    ("n_customers", "k", "verdict", "suggested"),
    [
        (320, 16, "ok", 16),  # 20 per trait
        (1000, 8, "ok", 8),  # the suggestion never exceeds the asked k
        (131, 16, "thin", 6),  # 8.2 per trait: warn, suggest 131 // 20
        (319, 16, "thin", 15),
        (32, 16, "thin", 2),  # exactly the floor of 2 per trait
        (31, 16, "refuse", 2),
        (4, 2, "thin", 2),
        (3, 2, "refuse", 2),
        (1, 1, "refuse", 2),  # fewer than 2 customers is never enough
        (0, 4, "refuse", 2),
    ],
)
def test_rule(n_customers: int, k: int, verdict: str, suggested: int) -> None:
    check = check_trait_count(n_customers, k)
    assert (check.verdict, check.suggested_k) == (verdict, suggested)
    assert (check.message == "") == (verdict == "ok")


def test_messages_carry_the_numbers() -> None:
    thin = check_trait_count(131, 16).message
    assert "131 customers" in thin and "k=16" in thin and "k=6" in thin and "8.2 per trait" in thin
    refused = check_trait_count(31, 16).message
    assert "31 customers" in refused and "need at least 32" in refused and "use k=2 or fewer" in refused
    assert "at least 4 customers" in check_trait_count(3, 2).message


def test_fit_model_refuses_below_the_floor_and_records_a_thin_fit(
    tmp_path, caplog: pytest.LogCaptureFixture
) -> None:
    spec = SyntheticSpec(
        n_customers=40, n_products=60, n_categories=6, n_segments=3, n_events=1200, days=10, seed=5
    )
    data = generate(spec)
    config = PipelineConfig.from_mapping({"vector_size": 8, "epochs": 2, "workers": 1})
    corpus = build_corpus(data.events, config.sessions, tmp_path)
    tokens = train_tokens(corpus, config)
    end = data.events["event_time"].max() + pd.Timedelta(seconds=1)
    # 38 customers with history (2 have too few events): k=24 needs at least 48.
    with pytest.raises(ConfigError, match=r"customers with history cannot support k=24 traits"):
        fit_model(data.events, tokens, PipelineConfig.from_mapping({"k": 24, "vector_size": 8}), end)
    with caplog.at_level("WARNING", logger="traitflow.pipeline"):
        model = fit_model(data.events, tokens, PipelineConfig.from_mapping({"k": 4, "vector_size": 8}), end)
    n = model.metrics["n_training_customers"]
    assert 8 <= n < 80 and "thin_data" in model.metrics
    assert f"only {n} customers with history for k=4 traits" in caplog.text
    sizes = model.metrics["trait_sizes"]
    assert len(sizes) == 4 and sum(sizes) == n
