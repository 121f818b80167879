"""What the load test runs against: Traitflow data in its own schema, its own redis-server, its
own ``airflow api-server`` with this repo's plugin, and the daily update writing meanwhile.

The data is built through the library as production builds it: synthetic events ingested, one
weekly chain (``chains.run_weekly_chain``) that trains and promotes a model and writes every
customer's profile. Events are posted for the day after the last synthetic one (``post_day``),
and the background daily update covers that day, so it rewrites the very profiles the posts
write.
"""

from __future__ import annotations

import multiprocessing
import os
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from servers import ADMIN

START = datetime(2026, 3, 1, tzinfo=UTC)
DAY = timedelta(days=1)


@dataclass(frozen=True)
class Workload:
    """The synthetic data behind the load test and the weekly chain's parameters."""

    n_customers: int = 3000
    n_products: int = 400
    n_events: int = 60_000
    days: int = 28
    seed: int = 0
    k: int = 8
    vector_size: int = 16

    def chain_params(self) -> dict[str, Any]:
        return {
            "k": self.k,
            "vector_size": self.vector_size,
            "epochs": 3,
            "workers": 1,
            "training_window_days": self.days,
        }


@dataclass(frozen=True)
class Product:
    product_id: str
    category: str
    price: float


@dataclass(frozen=True)
class BuiltData:
    """The schema's model, its profiled customers (a stable pseudo-random order: the Zipf ranks)
    and the products events are posted for."""

    schema: str
    model_version: int
    customer_ids: tuple[str, ...]
    products: tuple[Product, ...]
    post_day: datetime


def build_data(url: str, schema: str, workload: Workload, work_dir: Path) -> BuiltData:
    """Ingest synthetic events into ``schema`` and run one weekly chain (train, gate, promote)."""
    from traitflow import event_schema
    from traitflow.chains import run_weekly_chain
    from traitflow.events import LoadResult
    from traitflow.store import Store
    from traitflow.synthetic import SyntheticSpec, generate

    spec = SyntheticSpec(
        n_customers=workload.n_customers,
        n_products=workload.n_products,
        n_events=workload.n_events,
        start=START,
        days=workload.days,
        seed=workload.seed,
    )
    events = generate(spec).events
    with Store(url, schema) as store:
        store.upgrade()
        store.ingest_events(LoadResult(events, event_schema.empty_rejects()), "synthetic", "load-test")
        end = START + workload.days * DAY
        outcome = run_weekly_chain(
            url, end, work_dir / "weekly", workload.chain_params(), True, run_id="load-weekly", schema=schema
        )
        if outcome.status != "promoted" or outcome.model_version is None:
            raise RuntimeError(f"the weekly chain did not promote a model: {outcome.decisions}")
        customers = store.profile_sample(limit=workload.n_customers * 2).customer_ids
    catalogue = events.drop_duplicates("product_id")
    products = tuple(
        Product(str(p), str(c), float(x))
        for p, c, x in zip(catalogue["product_id"], catalogue["category"], catalogue["price"], strict=True)
    )
    return BuiltData(schema, outcome.model_version, tuple(customers), products, end)


def log_in(client: Any, base: str, password: str) -> str:
    """A JWT for the admin (``POST /auth/token``) through an ``httpx.Client``."""
    response = client.post(f"{base}/auth/token", json={"username": ADMIN, "password": password})
    response.raise_for_status()
    return str(response.json()["access_token"])


# ---------------------------------------------------------------------------- daily update


@dataclass(frozen=True)
class DailyJob:
    """The daily update of ``[day, day + 1)`` repeated every ``interval_s`` while the load runs."""

    database_url: str
    schema: str
    day: datetime
    work_dir: str
    interval_s: float
    redis_url: str | None


def daily_loop(job: DailyJob, stop: Any, results: Any) -> None:
    """Run ``chains.run_daily_update`` until ``stop`` is set; put (seconds, n_profiles) per run
    (or an error text) on ``results``. With ``redis_url`` the runs refresh the profile cache."""
    from traitflow.chains import run_daily_update

    if job.redis_url:
        os.environ["TRAITFLOW_REDIS_URL"] = job.redis_url
    n = 0
    while not stop.is_set():
        started = time.perf_counter()
        try:
            outcome = run_daily_update(
                job.database_url, job.day, job.day + DAY, Path(job.work_dir) / f"daily-{n}",
                run_id=f"load-daily-{n}", schema=job.schema,
            )  # fmt: skip
            results.put((time.perf_counter() - started, outcome.n_profiles))
        except Exception as exc:  # reported, not fatal: the load goes on
            results.put(f"{type(exc).__name__}: {exc}")
        n += 1
        stop.wait(job.interval_s)


class DailyRunner:
    """``daily_loop`` in a separate process (``process=True``: it does not compete with the load
    generator for the GIL) or in a thread."""

    def __init__(self, job: DailyJob, *, process: bool = True) -> None:
        if process:
            context = multiprocessing.get_context("spawn")
            self._stop: Any = context.Event()
            self._results: Any = context.Queue()
            self._worker: Any = context.Process(target=daily_loop, args=(job, self._stop, self._results))
        else:
            import queue

            self._stop, self._results = threading.Event(), queue.Queue()
            self._worker = threading.Thread(target=daily_loop, args=(job, self._stop, self._results))

    def start(self) -> None:
        self._worker.start()

    def stop(self) -> list[Any]:
        """Stop after the current run; every run's (seconds, n_profiles) or error text."""
        self._stop.set()
        self._worker.join(600)
        results = []
        while not self._results.empty():
            results.append(self._results.get())
        return results
