"""A real weekly run (``dag.test``, real jobs, real PostgreSQL) whose quality gate fails: events
without any structure (every view a uniformly random product) give a first candidate that cannot
beat recommending the most popular items, so it is stored as a ``rejected`` version, not promoted.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from traitflow.store import Store

END = datetime(2026, 3, 8, tzinfo=UTC)  # a Sunday: the week [Mar 1, Mar 8)
CONF = {"k": 4, "vector_size": 16, "epochs": 5, "workers": 1, "training_window_days": 7}


def _structureless_events(path: Path) -> None:
    """300 customers x 4 sessions x 6 views of uniformly random products (no co-occurrence)."""
    rng = np.random.default_rng(11)
    rows = []
    for customer in range(300):
        for session in range(4):
            start = END - timedelta(days=7) + timedelta(hours=int(rng.integers(0, 160)))
            for step in range(6):
                product = int(rng.integers(0, 120))
                rows.append(
                    {
                        "customer_id": f"c{customer:04d}",
                        "event_time": (start + timedelta(minutes=step)).strftime("%Y-%m-%dT%H:%M:%SZ"),
                        "action": "view",
                        "product_id": f"p{product:03d}",
                        "category": f"cat{product % 6}",
                        "price": "",
                        "session_id": f"s{customer}-{session}",
                    }
                )
    pd.DataFrame(rows).to_csv(path, index=False)


def test_a_candidate_the_gate_refuses_is_stored_rejected_and_nothing_is_promoted(
    run_dag: Any, store: Store, store_schema: str, database_url: str, tmp_path: Path
) -> None:
    events = tmp_path / "events.csv"
    _structureless_events(events)
    store.ingest_file(events, "canonical", "seed")
    env = {"TRAITFLOW_DATABASE_URL": database_url, "TRAITFLOW_DB_SCHEMA": store_schema}

    result = run_dag("traitflow_weekly_retrain", END, conf=CONF, env=env)

    assert result.state == "success", result
    gate = result.xcom("quality_gate", key="decision")
    assert gate["branch"] == "reject_candidate" and gate["baseline"] == "popularity", gate
    assert result["reject_candidate"] == "success" and result["promote"] == "skipped"
    rejected = result.xcom("reject_candidate")
    assert store.active_model_version() is None
    versions = store.model_versions().set_index("model_version")
    assert list(versions.index) == [rejected["model_version"]]
    row = versions.loc[rejected["model_version"]]
    assert row["status"] == "rejected" and row["status_reason"] == gate["reason"]
    assert row["metrics"]["quality_gate"]["passed"] is False
    (report,) = store.run_reports("weekly", limit=10)
    assert report["report"]["reject_candidate"] == rejected
