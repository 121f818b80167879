"""The Traits page in a real browser: a real ``airflow api-server`` with this repo's plugins, a
headless Chromium driven by Selenium, data built by the library's own weekly and daily chains.

It logs in through Airflow's login page, opens the page and a customer, and checks that every
chart drew its marks (Chart.js's own element counts and non-blank canvas pixels), that the run
reports show the weekly decisions and fold the idle daily runs, that the customer lookup lists
the customer's products as the library ranks them (those the customer had marked) and that its
"new to this customer only" toggle re-queries them, and that the browser console has no errors.
Screenshots go to tests/artifacts/screenshots/ (gitignored).

Needs Debian's ``chromium`` and ``chromium-driver`` (``.ci/run`` installs them); without them the
test skips and says which is missing.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from traitflow import event_schema
from traitflow.chains import run_daily_update, run_weekly_chain
from traitflow.events import LoadResult
from traitflow.store import Store
from traitflow.synthetic import SyntheticSpec, generate

REPO = Path(__file__).resolve().parents[2]
SCREENSHOTS = REPO / "tests" / "artifacts" / "screenshots"
START = datetime(2026, 3, 1, tzinfo=UTC)
DAY = timedelta(days=1)
PARAMS = {"k": 6, "vector_size": 16, "epochs": 3, "workers": 1, "training_window_days": 30}
ADMIN = "admin"
SERVER_START_TIMEOUT_S = 180
# Without the networking flags Chromium waits on services it cannot reach on a closed network.
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1400,1000",
)
CHARTS = ("chart-sizes", "chart-size-history", "chart-quality", "chart-drift", "chart-map")
CUSTOMER_CHART = "chart-profile"


@dataclass(frozen=True)
class Built:
    """What the chains built: two promoted models and the customer with the longest history."""

    schema: str
    model_versions: tuple[int, ...]
    customer_id: str
    n_history: int


def _browser_paths() -> tuple[str, str]:
    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    missing = [name for name, path in (("chromium", chromium), ("chromium-driver", driver)) if path is None]
    if missing:
        reason = f"browser missing: Debian package(s) {', '.join(missing)} not installed (see .ci/run)"
        print(reason)
        pytest.skip(reason)
    assert chromium is not None and driver is not None
    return chromium, driver


def _build_data(store: Store, url: str, schema: str, work: Path) -> Built:
    """Events of 12 days; a weekly run on day 7, daily runs, a forced second weekly run on day 10,
    and two daily runs after the last events (nothing to do)."""
    spec = SyntheticSpec(
        n_customers=300, n_products=200, n_categories=12, n_segments=4, n_events=12_000, start=START, days=12,
        seed=3,
    )  # fmt: skip
    events = generate(spec).events
    store.ingest_events(
        LoadResult(events=events, rejects=event_schema.empty_rejects()), "synthetic", "browser"
    )

    def weekly(day: int, force: bool) -> Any:
        run_id = f"weekly-{day}"
        end = START + day * DAY
        return run_weekly_chain(url, end, work / run_id, PARAMS, force, run_id=run_id, schema=schema)

    def daily(day: int) -> Any:
        start = START + day * DAY
        return run_daily_update(
            url, start, start + DAY, work / f"daily-{day}", run_id=f"daily-{day}", schema=schema
        )

    first = weekly(7, False)
    assert first.status == "promoted", first.decisions
    for day in (7, 8, 9):
        assert daily(day).n_profiles > 0
    second = weekly(10, True)
    assert second.status == "promoted", second.decisions
    for day in (10, 11):
        assert daily(day).n_profiles > 0
    for day in (13, 14):  # after the last events: nothing to do
        assert daily(day).n_profiles == 0
    candidates = store.profile_sample(limit=30).customer_ids
    customer = max(candidates, key=lambda c: (len(store.labelled_profile_history(c)), c))
    versions = (first.model_version, second.model_version)
    return Built(schema, versions, customer, len(store.labelled_profile_history(customer)))


@pytest.fixture
def api_server(
    store: Store, store_schema: str, database_url: str, tmp_path: Path, servers: Any
) -> Iterator[tuple[str, str]]:
    """``(base URL, admin password)`` of a real api-server on a free loopback port
    (``bench/servers.py``): its own AIRFLOW_HOME and migrated SQLite metadata DB, this repo's
    plugins folder, SimpleAuthManager."""
    settings = servers.ServerSettings(database_url, store_schema, start_timeout_s=SERVER_START_TIMEOUT_S)
    with servers.api_server(settings, tmp_path / "airflow") as server:
        yield server


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Any]:
    """Headless Chromium through chromedriver, with the console log kept."""
    chromium, driver_path = _browser_paths()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'chromium-profile'}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(executable_path=driver_path))
    try:
        yield driver
    finally:
        driver.quit()


# Per chart: the elements Chart.js laid out with a value (bars, points) in each dataset, and the
# canvas pixels drawn (alpha > 0).
CHART_MARKS_JS = """
const out = {};
for (const id of arguments[0]) {
  const canvas = document.getElementById(id);
  const chart = Chart.getChart(canvas);
  if (!chart) { out[id] = null; continue; }
  const marks = chart.data.datasets.map((d, i) =>
    chart.getDatasetMeta(i).data.filter((e, j) => d.data[j] !== null && d.data[j] !== undefined).length);
  const pixels = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data;
  let drawn = 0;
  for (let i = 3; i < pixels.length; i += 4) if (pixels[i] > 0) drawn += 1;
  out[id] = {marks, labels: chart.data.labels.length, drawn};
}
return out;
"""


def _wait_for(driver: Any, condition: Any, timeout: float = 60) -> Any:
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout).until(condition)


def _charts_drawn(driver: Any, ids: tuple[str, ...]) -> dict[str, Any]:
    marks = _wait_for(
        driver, lambda d: (m := d.execute_script(CHART_MARKS_JS, list(ids))) and all(m.values()) and m
    )
    return dict(marks)


def _log_in(driver: Any, base: str, password: str) -> None:
    from selenium.webdriver.common.by import By

    driver.get(f"{base}/traitflow/")  # not logged in: Airflow's login page, then back
    _wait_for(driver, lambda d: d.find_elements(By.CSS_SELECTOR, "input[name=username]"))
    driver.find_element(By.CSS_SELECTOR, "input[name=username]").send_keys(ADMIN)
    driver.find_element(By.CSS_SELECTOR, "input[name=password]").send_keys(password)
    driver.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    _wait_for(driver, lambda d: d.current_url.rstrip("/").endswith("/traitflow"))


def _screenshot(driver: Any, name: str) -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    driver.save_screenshot(str(path))
    return path


def _screenshot_sections(driver: Any) -> list[Path]:
    """The whole page, then each section of it."""
    from selenium.webdriver.common.by import By

    height = driver.execute_script("return document.documentElement.scrollHeight")
    driver.set_window_size(1400, int(height) + 200)
    paths = [_screenshot(driver, "traits_page")]
    for section in ("traits", "customer", "map", "models", "reports"):
        path = SCREENSHOTS / f"{section}.png"
        driver.find_element(By.ID, f"{section}-section").screenshot(str(path))
        paths.append(path)
    driver.set_window_size(1400, 1000)
    return paths


def _check_in_airflow_ui(driver: Any, base: str) -> Path:
    """The nav entry's view: Airflow's UI shows the page in an iframe, charts drawn there too."""
    from selenium.webdriver.common.by import By

    driver.get(f"{base}/plugin/traitflow")
    frame = _wait_for(driver, lambda d: d.find_elements(By.CSS_SELECTOR, "iframe[src*='traitflow']"))[0]
    driver.switch_to.frame(frame)
    try:
        _charts_drawn(driver, CHARTS)
    finally:
        driver.switch_to.default_content()
    return _screenshot(driver, "airflow_ui")


def _check_api_docs(driver: Any, base: str) -> Path:
    """Swagger UI from the plugin's own static files renders every route."""
    from selenium.webdriver.common.by import By

    driver.get(f"{base}/traitflow/docs")
    operations = _wait_for(driver, lambda d: d.find_elements(By.CSS_SELECTOR, ".opblock-summary-path"))
    paths = {op.get_attribute("data-path") for op in operations}
    assert {"/api/charts/trait-sizes", "/api/charts/model-quality", "/api/charts/trait-map"} <= paths
    return _screenshot(driver, "api_docs")


def _check_page(driver: Any, base: str, built: Built, store: Store) -> None:
    """Every chart of the page and of the customer drew its marks; the reports are summarized."""
    from selenium.webdriver.common.by import By

    driver.get(f"{base}/traitflow/?customer={built.customer_id}")
    marks = _charts_drawn(driver, (*CHARTS, CUSTOMER_CHART))
    n_traits = len(store.traits())
    assert marks["chart-sizes"]["marks"] == [n_traits]  # one bar per trait of the active model
    history = marks["chart-size-history"]
    assert history["labels"] >= 5 and sum(history["marks"]) >= history["labels"]  # profile times
    hit_rate, baseline, floor = marks["chart-quality"]["marks"]
    assert hit_rate == baseline == floor == len(built.model_versions)
    drift, recent, threshold = marks["chart-drift"]["marks"]
    quality = store.model_quality()
    assert drift == 1 and threshold == len(built.model_versions)  # drift needs a model to compare with
    assert recent == sum(q.recent_weighted_drift is not None for q in quality)  # increments only
    assert (
        sum(marks["chart-map"]["marks"]) == min(500, store.profile_sample(limit=5000).n_profiled) + n_traits
    )
    profile = marks[CUSTOMER_CHART]
    assert profile["labels"] == built.n_history >= 2 and min(profile["marks"]) == built.n_history
    for chart, drawn in marks.items():
        assert drawn["drawn"] > 2000, (chart, drawn)  # more than axes: bars, areas, points

    # The customer's history table beside the chart, and the run reports.
    assert len(driver.find_elements(By.CSS_SELECTOR, "#history tbody tr")) == built.n_history
    weekly = driver.find_elements(By.CSS_SELECTOR, "#reports tr[data-kind=weekly]")
    assert len(weekly) == 2
    assert all("quality_gate → measure_drift" in row.text for row in weekly)
    assert all("check_new_vocab → train_candidate" in row.text for row in weekly)
    folded = driver.find_element(By.CSS_SELECTOR, "#reports tr.folded summary")
    assert folded.text.startswith("2 daily runs with nothing to do"), folded.text
    assert not driver.find_element(By.ID, "error").is_displayed()


def test_traits_page_draws_every_chart_without_console_errors(
    browser: Any,
    api_server: tuple[str, str],
    store: Store,
    store_schema: str,
    database_url: str,
    tmp_path: Path,
) -> None:
    built = _build_data(store, database_url, store_schema, tmp_path / "runs")
    base, password = api_server
    _log_in(browser, base, password)
    screenshots = [_check_in_airflow_ui(browser, base)]
    _check_page(browser, base, built, store)
    screenshots += _screenshot_sections(browser)
    screenshots.append(_check_products(browser, base, built, store))  # on the same built data
    screenshots.append(_check_api_docs(browser, base))

    assert all(p.stat().st_size > 10_000 for p in screenshots)
    # Everything the browser logged since it started, the login page included.
    errors = [entry for entry in browser.get_log("browser") if entry["level"] == "SEVERE"]
    assert errors == []


def _product_rows(driver: Any) -> list[tuple[str, bool]]:
    """``(product id, marked "had events")`` of each item of the lookup's product list, in order."""
    from selenium.webdriver.common.by import By

    items = driver.find_elements(By.CSS_SELECTOR, "#products-list li[data-product-id]")
    return [
        (i.get_attribute("data-product-id"), bool(i.find_elements(By.CSS_SELECTOR, ".had"))) for i in items
    ]


def _check_products(driver: Any, base: str, built: Built, store: Store) -> Path:
    """The lookup lists the customer's top 10 products as the library ranks them, the ones the
    customer had events on marked; the toggle re-queries with new_only and back."""
    from selenium.webdriver.common.by import By

    from traitflow.recommend import customer_products

    profile = store.current_profile(built.customer_id)
    assert profile is not None
    seen = set(store.customer_product_ids(built.customer_id))
    assert seen  # the customer has events: new_only has something to leave out
    ranked = customer_products(store, profile, 10).products
    fresh = customer_products(store, profile, 10, new_only=True).products
    everything = [(p.product_id, p.product_id in seen) for p in ranked]

    driver.get(f"{base}/traitflow/?customer={built.customer_id}")
    _wait_for(driver, lambda d: d.find_elements(By.CSS_SELECTOR, "#products-list[data-new-only=false]"))
    assert len(everything) == 10 and _product_rows(driver) == everything
    first = driver.find_element(By.CSS_SELECTOR, "#products-list li[data-product-id]")
    assert first.text.startswith(ranked[0].name or ranked[0].product_id)
    toggle = driver.find_element(By.ID, "products-new-only")
    assert not toggle.is_selected()

    toggle.click()
    _wait_for(driver, lambda d: d.find_elements(By.CSS_SELECTOR, "#products-list[data-new-only=true]"))
    assert fresh and _product_rows(driver) == [(p.product_id, False) for p in fresh]
    assert not seen & {p.product_id for p in fresh}
    assert "left out" in driver.find_element(By.ID, "products-note").text
    path = SCREENSHOTS / "customer_products.png"
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    driver.find_element(By.ID, "customer-section").screenshot(str(path))

    toggle.click()
    _wait_for(driver, lambda d: d.find_elements(By.CSS_SELECTOR, "#products-list[data-new-only=false]"))
    assert _product_rows(driver) == everything
    assert not driver.find_element(By.ID, "error").is_displayed()
    return path
