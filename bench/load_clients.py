"""The load generator's clients: N threads, each with its own keep-alive HTTP client, drawing
requests from the mix and recording every one.

Two modes (``LoadPlan.rate``):

* **closed loop** (``rate`` None): each client sends its next request when the last one is
  answered, until the deadline. Latency is send to answer; on a saturated server the clients
  slow down with it, so the offered load falls and queueing is hidden (coordinated omission).
* **open loop** (``rate`` R requests/s in total): each client follows a schedule of its own, a
  Poisson process of R / N per second (``poisson_schedule``; together a Poisson process of R), fixed
  before the run. Latency is measured from the **scheduled** send time, so a request that had to
  wait for its client's previous answer counts that wait too (``Sample.late``: how late it was
  sent). At most N requests are in flight. Requests still unsent ``drain_s`` after the end are
  recorded as errors (status ``NOT_SENT``) with the time they waited so far, a lower bound.

Routes (``ROUTES``): ``profile`` (``GET /api/customers/{id}``), ``similar``
(``GET /api/customers/{id}/similar``), both for a Zipf-distributed customer (rank 1 the most
read), and ``post`` (``POST /api/customers/{id}/events``: one valid event, plus an invalid one
in a share of the posts, so rejects are exercised too). Posted events get unique times on
``post_day``, so afterwards each one can be found in the store (or in the rejects).
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import quote

import numpy as np
from load_server import Product

ROUTES = ("profile", "similar", "post")
BAD_ACTION = "teleport"  # not in event_schema.ACTIONS: rejected as unknown_action
TRANSPORT_ERROR = 0  # the status recorded when no response came back
NOT_SENT = -1  # open loop: still scheduled when the drain after the end ran out


@dataclass(frozen=True)
class Mix:
    """Shares of the routes (normalized)."""

    profile: float
    similar: float
    post: float

    @classmethod
    def parse(cls, text: str) -> Mix:
        """``"profile=80,similar=10,post=10"``."""
        shares = dict.fromkeys(ROUTES, 0.0)
        for part in filter(None, (p.strip() for p in text.split(","))):
            name, _, value = part.partition("=")
            if name.strip() not in shares:
                raise ValueError(f"unknown route {name!r} in the mix; routes: {', '.join(ROUTES)}")
            shares[name.strip()] = float(value)
        total = sum(shares.values())
        if total <= 0 or min(shares.values()) < 0:
            raise ValueError(f"the mix needs non-negative shares with a positive sum, got {text!r}")
        return cls(**{k: v / total for k, v in shares.items()})

    def cumulative(self) -> np.ndarray:
        return np.cumsum([self.profile, self.similar, self.post])


@dataclass(frozen=True)
class LoadPlan:
    concurrency: int
    duration_s: float
    warmup_s: float
    mix: Mix
    zipf_exponent: float
    customer_ids: tuple[str, ...]
    products: tuple[Product, ...]
    post_day: datetime
    reject_share: float = 0.05
    seed: int = 0
    api_prefix: str = "/traitflow"  # "" against the plugin's own app
    rate: float | None = None  # open loop: requests/s over all clients (None: closed loop)
    drain_s: float = 10.0  # open loop: how long after the end scheduled requests may still go


@dataclass(frozen=True)
class Sample:
    """One request. ``seconds``: from the send (closed loop) or the scheduled send (open loop) to
    the answer; ``late``: how much later than scheduled it was sent (0 in a closed loop), so
    ``seconds - late`` is the server's turnaround as the client saw it."""

    route: str
    status: int
    seconds: float
    at: float  # when it was sent or scheduled, in seconds since the measured phase began (< 0: warm-up)
    late: float = 0.0


@dataclass(frozen=True)
class Post:
    """One event post: what was sent, and what the response said (``source`` None without one)."""

    customer_id: str
    good: tuple[Mapping[str, Any], ...]
    n_bad: int
    status: int
    source: str | None
    n_stored: int | None
    n_rejected: int | None


@dataclass
class ClientResults:
    samples: list[Sample] = field(default_factory=list)
    posts: list[Post] = field(default_factory=list)
    errors: dict[str, int] = field(default_factory=dict)  # transport exception type -> count


def poisson_schedule(rate: float, start: float, end: float, rng: np.random.Generator) -> np.ndarray:
    """Send times in ``[start, end)`` of a Poisson process of ``rate`` per second (exponential
    gaps, the first one after ``start``), ascending; same clock as ``start`` and ``end``."""
    if rate <= 0:
        raise ValueError(f"the rate must be positive, got {rate}")
    expected = rate * max(end - start, 0.0)
    gaps = rng.exponential(1.0 / rate, int(expected + 6 * np.sqrt(expected) + 16))
    times = start + np.cumsum(gaps)
    while len(times) and times[-1] < end:  # a rare long draw: extend until past the end
        times = np.concatenate([times, times[-1] + np.cumsum(rng.exponential(1.0 / rate, len(gaps)))])
    return times[times < end]


def zipf_weights(n: int, exponent: float) -> np.ndarray:
    """Cumulative probabilities of ranks 1..n under Zipf(``exponent``) (0: uniform)."""
    weights = 1.0 / np.arange(1, n + 1, dtype=np.float64) ** exponent
    return np.cumsum(weights / weights.sum())


class _Client:
    """One simulated client: its own RNG, HTTP client and records (merged at the end)."""

    def __init__(self, plan: LoadPlan, http: Any, index: int, times: Any, begin: float) -> None:
        self.plan, self.http, self.times, self.begin = plan, http, times, begin
        self.rng = np.random.default_rng([plan.seed, index])
        self.routes = plan.mix.cumulative()
        self.ranks = zipf_weights(len(plan.customer_ids), plan.zipf_exponent)
        self.results = ClientResults()

    def run(self, until: float) -> ClientResults:
        """Closed loop: the next request as soon as the last one is answered, until ``until``."""
        while time.perf_counter() < until:
            self._request(*self._draw())
        return self.results

    def run_schedule(self, schedule: Sequence[float], cutoff: float) -> ClientResults:
        """Open loop: one request at each time of ``schedule`` (``time.perf_counter`` clock), or
        as soon after it as the previous answer allows; those not sent by ``cutoff`` are recorded
        as ``NOT_SENT``."""
        for i, when in enumerate(schedule):
            if time.perf_counter() >= cutoff:
                for rest in schedule[i:]:
                    route, _ = self._draw()
                    waited = max(cutoff - rest, 0.0)
                    self.results.samples.append(Sample(route, NOT_SENT, waited, rest - self.begin, waited))
                break
            _sleep_until(when)
            self._request(*self._draw(), scheduled=when)
        return self.results

    def _draw(self) -> tuple[str, str]:
        route = ROUTES[min(int(np.searchsorted(self.routes, self.rng.random())), 2)]
        customer = self.plan.customer_ids[int(np.searchsorted(self.ranks, self.rng.random()))]
        return route, customer

    def _request(self, route: str, customer: str, scheduled: float | None = None) -> None:
        path = f"{self.plan.api_prefix}/api/customers/{quote(customer, safe='')}"
        good: list[dict[str, Any]] = []
        n_bad = 0
        started = time.perf_counter()
        origin = started if scheduled is None else min(scheduled, started)
        try:
            if route == "post":
                good, bad = self._events()
                n_bad = len(bad)
                response = self.http.post(f"{path}/events", json={"events": good + bad})
            else:
                response = self.http.get(f"{path}/similar" if route == "similar" else path)
            status = response.status_code
        except Exception as exc:  # a transport failure is a result, recorded as status 0
            response, status = None, TRANSPORT_ERROR
            name = type(exc).__name__
            self.results.errors[name] = self.results.errors.get(name, 0) + 1
        finished = time.perf_counter()
        self.results.samples.append(
            Sample(route, status, finished - origin, origin - self.begin, started - origin)
        )
        if route == "post":
            self.results.posts.append(_post_record(customer, good, n_bad, status, response))

    def _events(self) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """One valid event for a random product at a unique time; sometimes an invalid one too."""
        product = self.plan.products[int(self.rng.integers(len(self.plan.products)))]
        when = self.plan.post_day + timedelta(milliseconds=next(self.times))
        action = ("view", "cart", "purchase")[int(self.rng.integers(3))]
        event = {
            "event_time": when.isoformat().replace("+00:00", "Z"),
            "action": action,
            "product_id": product.product_id,
            "category": product.category,
            "price": product.price,
            "session_id": f"load-{when.timestamp():.3f}",
        }
        bad = [{**event, "action": BAD_ACTION}] if self.rng.random() < self.plan.reject_share else []
        return [event], bad


def _post_record(
    customer: str, good: Sequence[Mapping[str, Any]], n_bad: int, status: int, response: Any
) -> Post:
    body: dict[str, Any] = {}
    if response is not None and status in (200, 422):
        try:
            body = response.json()
        except ValueError:
            body = {}
    return Post(
        customer, tuple(good), n_bad, status, body.get("source"), body.get("n_stored"), body.get("n_rejected")
    )


def run_clients(
    plan: LoadPlan,
    make_http: Callable[[], Any],
    *,
    at_start: Callable[[], None] | None = None,
    timers: Sequence[tuple[float, Callable[[], None]]] = (),
) -> ClientResults:
    """Warm up for ``warmup_s``, call ``at_start``, then load for ``duration_s``; ``timers`` are
    (seconds after the measured start, callback) run meanwhile (e.g. killing Redis). Each client
    thread opens its HTTP client with ``make_http()`` (closed at the end). Closed loop, or open
    loop at ``plan.rate`` (see the module docstring)."""
    times = itertools.count(1)  # next() on a count is atomic under the GIL: unique event times
    clients = [_Client(plan, make_http(), i, times, 0.0) for i in range(plan.concurrency)]
    start = time.perf_counter()
    begin = start + plan.warmup_s
    end = begin + plan.duration_s
    threads = []
    for client in clients:
        client.begin = begin
        if plan.rate is None:
            threads.append(threading.Thread(target=client.run, args=(end,), daemon=True))
        else:
            schedule = poisson_schedule(plan.rate / plan.concurrency, start, end, client.rng)
            args = (schedule, end + plan.drain_s)
            threads.append(threading.Thread(target=client.run_schedule, args=args, daemon=True))
    for thread in threads:
        thread.start()
    _sleep_until(begin)
    if at_start is not None:
        at_start()
    for delay, callback in sorted(timers, key=lambda t: t[0]):
        _sleep_until(begin + delay)
        callback()
    for thread in threads:
        thread.join(max(0.0, end - time.perf_counter()) + plan.drain_s + 120)
    merged = ClientResults()
    for client in clients:
        merged.samples += client.results.samples
        merged.posts += client.results.posts
        for name, count in client.results.errors.items():
            merged.errors[name] = merged.errors.get(name, 0) + count
        client.http.close()
    return merged


def prewarm(plan: LoadPlan, make_http: Callable[[], Any], n_customers: int) -> dict[str, int]:
    """Read the profiles of the ``n_customers`` most read customers once (the cache warm), spread
    over ``plan.concurrency`` threads; the statuses seen, by count."""
    ids = plan.customer_ids[:n_customers]
    statuses: list[int] = []

    def read(part: Sequence[str]) -> None:
        http = make_http()
        try:
            for customer in part:
                path = f"{plan.api_prefix}/api/customers/{quote(customer, safe='')}"
                try:
                    statuses.append(http.get(path).status_code)
                except Exception:  # counted, as in the load itself
                    statuses.append(TRANSPORT_ERROR)
        finally:
            http.close()

    n = plan.concurrency
    threads = [threading.Thread(target=read, args=(ids[i::n],)) for i in range(n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return {str(status): statuses.count(status) for status in sorted(set(statuses))}


def _sleep_until(instant: float) -> None:
    time.sleep(max(0.0, instant - time.perf_counter()))
