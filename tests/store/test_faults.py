"""Fault suite: a write killed at any point, or a database shut down mid-write, leaves nothing half-done.

The scenario is the store's part of a daily and a weekly run, on files prepared once per module:
``ingest`` (``Store.ingest_file`` of a CSV in several chunks, with rejects), ``plan`` (the
weekly candidate saved as a staging version under its key, ``Store.save_candidate``), ``stage``
(its profiles put in the shard staging table), ``publish`` (the weekly promotion itself,
``jobs.promote``: ``Store.publish_candidate`` of the staged batch) and
``daily`` (``Store.write_profiles`` with ``require_selected_model``, as ``jobs.update_profiles``).

* kill -9: the scenario runs in a child process (``python -c``) that SIGKILLs itself right after
  a chosen store internal returned, i.e. inside the open write transaction (mid-ingest between
  chunks, mid-profile-write between the history and the current rows, just before COMMIT), or
  in the middle of a binary COPY (rows sent, trailer not). The database must then hold exactly
  what a clean run of the steps before the killed one holds, and a re-run of the whole scenario
  must give exactly the tables of a clean run.
* immediate shutdown: a private embedded server (never the shared one) is stopped with
  ``pg_ctl stop -m immediate`` in the middle of the weekly or the daily write; the write fails
  with a clear error that shows no password, after the restart (crash recovery) nothing of it is
  there, and the retry gives the tables of a clean run.

Tables are compared by ``content_checksums``: every table of the schema (also those
``Store.table_checksums`` leaves out), without the columns that record *when* or *in which
transaction* a row was written, and with model versions replaced by their rank (a killed
transaction consumes a value of the ``model_versions`` sequence: the retry's version may be 2
where the clean run's is 1, which is not state left behind). Time to fail and time to recover are
printed (``-s``) for each experiment.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import numpy as np
import pandas as pd
import psycopg
import pytest
from psycopg import sql

from traitflow import jobs
from traitflow.model import TraitflowModel
from traitflow.profile_batch import ProfileBatch
from traitflow.runs import (
    Candidate,
    CorpusInfo,
    DriftResult,
    FittedCandidate,
    GateResult,
    RunContext,
    ShardPlan,
)
from traitflow.store import (
    DatabaseConnectionLostError,
    Store,
    StoreError,
    embedded_url,
    stop_embedded,
)

pytestmark = pytest.mark.fault

STEPS = ("ingest", "plan", "stage", "publish", "daily")
N_EVENTS = 3_000
CHUNK_ROWS = 500  # the CSV goes in 6 chunks, so a kill after the second is mid-file
KILL_STAMP = "TRAITFLOW_FAULT_KILL_STAMP"  # file the child writes the wall-clock time of its kill to
# Columns that say when (or in which transaction) a row was written: they differ between any two runs.
WRITE_TIME_COLUMNS = frozenset(
    {"ingested_at", "rejected_at", "created_at", "updated_at", "promoted_at", "retired_at", "applied_at"}
)
WRITE_XID_COLUMNS = frozenset({"ingest_xid"})


# ------------------------------------------------------------------------------ the scenario


@dataclass(frozen=True)
class Scenario:
    """Input files of the scenario (paths as strings, so it crosses to the child as JSON)."""

    events_csv: str
    model_dir: str
    weekly_profiles: str
    daily_profiles: str


def _ingest(store: Store, scenario: Scenario) -> None:
    store.ingest_file(scenario.events_csv, "canonical", "fault-run", chunksize=CHUNK_ROWS)


WEEKLY_END = datetime(2024, 1, 8, tzinfo=UTC)


def _weekly_plan(store: Store, scenario: Scenario) -> ShardPlan:
    """The weekly run's one-shard plan, with the candidate's staging version (``_plan``)."""
    corpus = CorpusInfo(datetime(2024, 1, 1, tzinfo=UTC), WEEKLY_END, N_EVENTS, None, "")
    candidate = Candidate(corpus, str(Path(scenario.model_dir).parent / "tokens.npz"), 0, {})
    fitted = FittedCandidate(candidate, scenario.model_dir, refit=True)
    plan = ShardPlan("weekly:fault-run", 1, WEEKLY_END.isoformat(), fitted=fitted, event_snapshot="")
    key = jobs.candidate_key(plan)
    # Idempotent: after the plan step this finds the version it saved and writes nothing.
    version = store.save_candidate(TraitflowModel.load(scenario.model_dir), run_key=key)
    return replace(plan, model_version=version, model_key=key)


def _plan(store: Store, scenario: Scenario) -> None:
    # What the weekly plan_recompute saves before any shard runs.
    _weekly_plan(store, scenario)


def _stage(store: Store, scenario: Scenario) -> None:
    # What the weekly run's one recompute_profiles shard stages for promote.
    plan = _weekly_plan(store, scenario)
    batch = ProfileBatch.load(scenario.weekly_profiles)
    batch.model_version = plan.model_version
    store.stage_profiles(plan.run_key, 0, 1, batch)


def _publish(store: Store, scenario: Scenario) -> None:
    # jobs.promote opens its own Store on the context's schema, like the weekly DAG's task.
    context = RunContext(
        "fault-run", datetime(2024, 1, 1, tzinfo=UTC), WEEKLY_END, scenario.model_dir, store.url, store.schema
    )
    gate = GateResult(
        True, "passes", "popularity", 0.02, 0.3, 0.05, 0.02, 100, popularity_hit_rate=0.25, lower=0.01
    )
    drift = DriftResult(measured=False, reason="no active model")
    jobs.promote(context, _weekly_plan(store, scenario), gate, drift)


def _daily(store: Store, scenario: Scenario) -> None:
    batch = ProfileBatch.load(scenario.daily_profiles)
    batch.model_version = store.model_version_for(batch.as_of)
    store.write_profiles(batch, require_selected_model=True)


STEP_FUNCTIONS: dict[str, Callable[[Store, Scenario], None]] = {
    "ingest": _ingest,
    "plan": _plan,
    "stage": _stage,
    "publish": _publish,
    "daily": _daily,
}


@dataclass(frozen=True)
class KillPoint:
    """SIGKILL the process once ``calls`` calls of ``module.attr`` (any of ``attrs``) have returned
    during ``step``: the step's transaction is open and has written part of its rows. With
    ``mid_copy`` the attr is ``copybin.iter_payload`` and the kill comes inside the ``calls``-th
    binary COPY, after its header and first block of rows were sent and before its trailer."""

    step: str
    module: str
    attrs: tuple[str, ...]
    calls: int = 1
    mid_copy: bool = False


KILL_POINTS = {
    "mid-ingest (after chunk 2 of 6)": KillPoint("ingest", "traitflow.store.ingest", ("ingest_frames",), 2),
    "shard staging before COMMIT": KillPoint("stage", "traitflow.store.profile_shards", ("stage_shard",)),
    "weekly mid-profile-write (history written)": KillPoint(
        "publish", "traitflow.store.profiles", ("_copy_history", "_upsert_history")
    ),
    "weekly promotion before COMMIT": KillPoint("publish", "traitflow.store.models", ("promote",)),
    "daily mid-profile-write (history written)": KillPoint(
        "daily", "traitflow.store.profiles", ("_copy_history", "_upsert_history")
    ),
    "daily write before COMMIT": KillPoint("daily", "traitflow.store.profiles", ("write_profiles",)),
    # COPYs of the ingest: events then rejects for each chunk, so the third is chunk 2's events.
    "mid-COPY of the events (chunk 2)": KillPoint(
        "ingest", "traitflow.store.copybin", ("iter_payload",), 3, mid_copy=True
    ),
    "candidate save mid-COPY of the token vectors": KillPoint(
        "plan", "traitflow.store.copybin", ("iter_payload",), 1, mid_copy=True
    ),
}


def _die() -> None:
    Path(os.environ[KILL_STAMP]).write_text(repr(time.time()))
    os.kill(os.getpid(), signal.SIGKILL)


def _arm(point: KillPoint) -> None:
    module = importlib.import_module(point.module)
    returned = [0]
    for attr in point.attrs:
        original = getattr(module, attr)

        def killing(*args, _original=original, **kwargs):
            result = _original(*args, **kwargs)
            returned[0] += 1
            if returned[0] >= point.calls:
                _die()
            return result

        def killing_mid_copy(*args, _original=original, **kwargs):
            returned[0] += 1
            parts = _original(*args, **kwargs)
            if returned[0] < point.calls:
                yield from parts
                return
            yield next(parts)  # header
            yield next(parts)  # first block of rows
            time.sleep(0.2)  # let the COPY's sender thread put them on the wire
            _die()

        setattr(module, attr, killing_mid_copy if point.mid_copy else killing)


def run_steps(
    url: str, schema: str, scenario: Scenario, steps: tuple[str, ...] = STEPS, kill: str | None = None
) -> None:
    """Run ``steps`` on one ``Store``; with ``kill`` (a ``KILL_POINTS`` key) die there. The child's
    entry point (``CHILD``); also the clean run and the re-run, in the test process."""
    point = KILL_POINTS[kill] if kill is not None else None
    store = Store(url, schema)
    try:
        for step in steps:
            if point is not None and point.step == step:
                _arm(point)
            STEP_FUNCTIONS[step](store, scenario)
    finally:
        store.close()


CHILD = (
    "import json, sys\n"
    "sys.path.insert(0, sys.argv[1])\n"
    "from test_faults import Scenario, run_steps\n"
    "args = json.loads(sys.argv[2])\n"
    "run_steps(args['url'], args['schema'], Scenario(**args['scenario']), kill=args['kill'])\n"
)


def _run_child(
    url: str, schema: str, scenario: Scenario, kill: str, stamp: Path
) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env[KILL_STAMP] = str(stamp)
    include = str(Path(__file__).resolve().parents[2] / "include")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (include, env.get("PYTHONPATH", "")) if p)
    args = {"url": url, "schema": schema, "scenario": scenario.__dict__, "kill": kill}
    return subprocess.run(
        [sys.executable, "-c", CHILD, str(Path(__file__).parent), json.dumps(args)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def _conftest_factories():
    """tests/conftest.py's plain data factories, loaded by path (``conftest`` names several modules)."""
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "conftest.py"
    spec = importlib.util.spec_from_file_location("_traitflow_test_factories", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def _write_scenario(directory: Path) -> Scenario:
    factories = _conftest_factories()
    build_model, build_profile_batch = factories.build_model, factories.build_profile_batch
    rng = np.random.default_rng(14)
    customers = np.array([f"c{i}" for i in range(300)], dtype=object)[rng.integers(0, 300, N_EVENTS)]
    seconds = np.sort(rng.integers(0, 6 * 86_400, N_EVENTS))
    actions = np.array(["view", "cart", "purchase"], dtype=object)[rng.integers(0, 3, N_EVENTS)]
    actions[::97] = "teleport"  # rejects (unknown_action) go to rejected_events in the same transaction
    events = pd.DataFrame(
        {
            "customer_id": customers,
            "event_time": (
                pd.Timestamp("2024-01-01T00:00:00Z") + pd.to_timedelta(seconds, unit="s")
            ).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "action": actions,
            "product_id": [f"p{i}" for i in rng.integers(0, 80, N_EVENTS)],
            "category": [f"cat{i}" for i in rng.integers(0, 9, N_EVENTS)],
            "price": np.round(rng.random(N_EVENTS) * 100, 2),
            "session_id": [f"s{i}" for i in seconds // 1800],
        }
    )
    events_csv = directory / "events_2024-01-06.csv"
    events.to_csv(events_csv, index=False)
    model_dir = build_model(trained_through=datetime(2024, 1, 7, tzinfo=UTC)).save(directory / "model")
    weekly = build_profile_batch(
        None, [f"c{i}" for i in range(200)], as_of=datetime(2024, 1, 8, tzinfo=UTC), seed=1
    ).save(directory / "weekly.npz")
    daily = build_profile_batch(
        None, [f"c{i}" for i in range(100, 250)], as_of=datetime(2024, 1, 10, tzinfo=UTC), seed=2
    ).save(directory / "daily.npz")
    return Scenario(str(events_csv), str(model_dir), str(weekly), str(daily))


# ----------------------------------------------------------------------------- comparison


def content_checksums(conn: psycopg.Connection, schema: str) -> dict[str, str]:
    """``{table: md5}`` over every table of ``schema``, rows in a canonical order, leaving out the
    write-time and transaction-id columns and replacing ``model_version`` by its rank."""
    tables = [
        row[0]
        for row in conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = %s"
            " AND table_type = 'BASE TABLE' ORDER BY table_name",
            (schema,),
        ).fetchall()
    ]
    rank = sql.SQL("(SELECT count(*) FROM {}.model_versions m WHERE m.model_version <= t.model_version)")
    out: dict[str, str] = {}
    with conn.transaction():  # one snapshot for all tables
        for table in tables:
            columns = conn.execute(
                "SELECT column_name FROM information_schema.columns WHERE table_schema = %s"
                " AND table_name = %s ORDER BY ordinal_position",
                (schema, table),
            ).fetchall()
            fields = []
            for (name,) in columns:
                if name in WRITE_TIME_COLUMNS or name in WRITE_XID_COLUMNS:
                    continue
                if name == "model_version":
                    fields.append(rank.format(sql.Identifier(schema)))
                else:
                    fields.append(sql.SQL("t.{}").format(sql.Identifier(name)))
            row = conn.execute(
                sql.SQL(
                    "SELECT count(*),"
                    " md5(coalesce(string_agg(r::text, E'\\n' ORDER BY r::text COLLATE \"C\"), ''))"
                    " FROM (SELECT ROW({}) AS r FROM {}.{} t) s"
                ).format(sql.SQL(", ").join(fields), sql.Identifier(schema), sql.Identifier(table))
            ).fetchone()
            assert row is not None
            out[table] = f"{row[0]} rows, md5 {row[1]}"
    return out


def _checksums(url: str, schema: str) -> dict[str, str]:
    with psycopg.connect(url, autocommit=True) as conn:
        return content_checksums(conn, schema)


def _drop(url: str, schema: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


def _clean_prefixes(url: str, schema: str, scenario: Scenario) -> list[dict[str, str]]:
    """Checksums of a clean run after 0, 1, ... ``len(STEPS)`` steps (the schema is left migrated
    and run)."""
    store = Store(url, schema)
    try:
        store.upgrade()
    finally:
        store.close()
    states = [_checksums(url, schema)]
    for step in STEPS:
        run_steps(url, schema, scenario, (step,))
        states.append(_checksums(url, schema))
    return states


@pytest.fixture(scope="module")
def scenario(tmp_path_factory: pytest.TempPathFactory) -> Scenario:
    return _write_scenario(tmp_path_factory.mktemp("faults"))


@pytest.fixture(scope="module")
def clean_states(database_url: str, scenario: Scenario) -> Iterator[list[dict[str, str]]]:
    schema = f"tf_test_clean_{os.getpid()}"
    try:
        states = _clean_prefixes(database_url, schema, scenario)
        # The scenario must change every table it writes, or "equal to the state before" proves little.
        for table in ("events", "rejected_events", "ingested_files"):
            assert states[1][table] != states[0][table], table
        for table in ("model_versions", "token_vectors", "trait_components"):
            assert states[2][table] != states[1][table], table
        assert states[3]["profile_shards"] != states[2]["profile_shards"]
        for table in ("model_versions", "customer_profiles", "customer_profile_history"):
            assert states[4][table] != states[3][table], table
        assert states[4]["profile_shards"] == states[2]["profile_shards"]  # the commit took the batch
        for table in ("customer_profiles", "customer_profile_history"):
            assert states[5][table] != states[4][table], table
        yield states
    finally:
        _drop(database_url, schema)


# ------------------------------------------------------------------------------- kill -9


def _wait_locks_released(url: str, schema: str, timeout: float = 20.0) -> float:
    """Wall-clock time at which no backend holds a lock on ``schema``'s tables any more (the killed
    client's backend has noticed the closed socket and rolled its transaction back)."""
    started = time.monotonic()
    with psycopg.connect(url, autocommit=True) as conn:
        while True:
            held = conn.execute(
                "SELECT count(*) FROM pg_locks l JOIN pg_class c ON c.oid = l.relation"
                " JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = %s",
                (schema,),
            ).fetchone()
            if held == (0,):
                return time.time()
            assert time.monotonic() - started < timeout, f"{held} locks on {schema} after the kill"
            time.sleep(0.01)


@pytest.mark.parametrize("kill", list(KILL_POINTS))
def test_a_write_killed_mid_transaction_leaves_nothing_and_the_rerun_equals_a_clean_run(
    kill: str,
    database_url: str,
    store_schema: str,
    scenario: Scenario,
    clean_states: list[dict[str, str]],
    tmp_path: Path,
) -> None:
    schema = store_schema
    try:
        store = Store(database_url, schema)
        try:
            store.upgrade()
        finally:
            store.close()
        stamp = tmp_path / "killed_at"
        child = _run_child(database_url, schema, scenario, kill, stamp)
        reaped = time.time()
        assert child.returncode == -signal.SIGKILL, (child.returncode, child.stderr[-3000:])
        killed_at = float(stamp.read_text())
        released = _wait_locks_released(database_url, schema)

        # Nothing of the killed step is visible: the tables are those of a clean run up to the step before.
        killed_step = STEPS.index(KILL_POINTS[kill].step)
        assert _checksums(database_url, schema) == clean_states[killed_step]

        started = time.monotonic()
        run_steps(database_url, schema, scenario)  # the retry: the whole scenario again
        time_to_recover = time.monotonic() - started
        assert _checksums(database_url, schema) == clean_states[-1]
        with psycopg.connect(database_url, autocommit=True) as conn:
            query = sql.SQL("SELECT array_agg(model_version ORDER BY model_version) FROM {}.model_versions")
            versions = conn.execute(query.format(sql.Identifier(schema))).fetchone()
        assert versions is not None and len(versions[0]) == 1  # one model, however often publish ran
        print(
            f"\nFAULT kill -9 at {kill}: child reaped {reaped - killed_at:.3f} s after the kill, server"
            f" released its locks {released - killed_at:.3f} s after it; re-run {time_to_recover:.2f} s;"
            f" model version after the re-run {versions[0][0]}"
        )
    finally:
        _drop(database_url, schema)


# --------------------------------------------------------------------- immediate shutdown

PASSWORD = "fault-Suite-pw-8c1f"


def _pg_ctl(pgdata: Path, args: list[str]) -> None:
    from pgserver._commands import pg_ctl

    pg_ctl(args, pgdata=pgdata, user="pgserver" if os.geteuid() == 0 else None, timeout=60)


@pytest.fixture
def private_server() -> Iterator[tuple[str, Path]]:
    """A throw-away embedded server (Unix socket in its own dir): (url, pgdata); always stopped
    and deleted afterwards, also when a test left it shut down or restarted it."""
    pgdata = Path(tempfile.mkdtemp(prefix="traitflow-fault-pg-")) / "pgdata"
    try:
        yield embedded_url(pgdata, delete_on_exit=True), pgdata
    finally:
        with contextlib.suppress(Exception):
            stop_embedded(pgdata)
        if (pgdata / "postmaster.pid").is_file():  # still up (e.g. restarted by the test): stop it
            with contextlib.suppress(Exception):
                _pg_ctl(pgdata, ["-m", "immediate", "stop"])
        shutil.rmtree(pgdata.parent, ignore_errors=True)


def _error_chain(error: BaseException) -> str:
    """Type and message of ``error`` and of every exception it was raised from or during."""
    parts: list[str] = []
    seen: BaseException | None = error
    while seen is not None and len(parts) < 10:
        parts.append(f"{type(seen).__name__}: {seen}")
        seen = seen.__cause__ or seen.__context__
    return "\n".join(parts)


@pytest.mark.parametrize("step", ["publish", "daily"])
def test_an_immediate_shutdown_mid_write_fails_clearly_and_the_retry_after_restart_equals_a_clean_run(
    step: str, private_server: tuple[str, Path], scenario: Scenario, monkeypatch: pytest.MonkeyPatch
) -> None:
    from traitflow.store import profiles as store_profiles

    url, pgdata = private_server
    socket_dir = parse_qs(urlsplit(url).query)["host"][0]
    with psycopg.connect(url, autocommit=True) as conn:  # a role with a password, to check redaction
        role = sql.SQL("CREATE ROLE fault_user LOGIN SUPERUSER PASSWORD {}")
        conn.execute(role.format(sql.Literal(PASSWORD)))
    secret_url = f"postgresql://fault_user:{PASSWORD}@/postgres?host={socket_dir}"
    clean = _clean_prefixes(url, "tf_clean", scenario)
    index = STEPS.index(step)

    store = Store(secret_url, "tf_crash")
    try:
        store.upgrade()
        for done in STEPS[:index]:
            STEP_FUNCTIONS[done](store, scenario)
        assert content_checksums(store.connection, "tf_crash") == clean[index]

        stopped: list[float] = []
        original = {name: getattr(store_profiles, name) for name in ("_copy_history", "_upsert_history")}

        def stop_server_after(name: str):
            def write_then_crash(*args, **kwargs):
                result = original[name](*args, **kwargs)
                _pg_ctl(pgdata, ["-m", "immediate", "stop"])  # the history is written, not committed
                stopped.append(time.monotonic())
                return result

            return write_then_crash

        for name in original:
            monkeypatch.setattr(store_profiles, name, stop_server_after(name))
        with pytest.raises(DatabaseConnectionLostError) as failure:
            STEP_FUNCTIONS[step](store, scenario)
        time_to_fail = time.monotonic() - stopped[0]
        chain = _error_chain(failure.value)
        assert PASSWORD not in chain and PASSWORD not in repr(failure.value)
        assert failure.value.__cause__ is None and failure.value.__suppress_context__  # raised from None
        assert time_to_fail < 10, time_to_fail
        message = str(failure.value)
        assert "connection to postgresql://fault_user:***@" in message and "was lost" in message, message
        assert "not committed" in message and "Retry" in message and not failure.value.during_commit
        clear = ("server closed the connection", "terminating connection", "shutdown")
        assert any(words in message for words in clear), message
        for name, function in original.items():
            monkeypatch.setattr(store_profiles, name, function)

        # While the server is down, a new task fails at connect, with the URL's password masked.
        with pytest.raises(StoreError, match="cannot connect") as down:
            Store(secret_url, "tf_crash")
        assert PASSWORD not in _error_chain(down.value)

        started = time.monotonic()
        _pg_ctl(pgdata, ["-w", "-o", '-h ""', "-o", f"-k {socket_dir}", "-l", str(pgdata / "log"), "start"])
        restarted = time.monotonic() - started
        # After crash recovery nothing of the interrupted write is there.
        assert _checksums(url, "tf_crash") == clean[index]
        started_retry = time.monotonic()
        # The retry on the same Store: its lost connection was closed, the next call opens a new one.
        for retried in STEPS[index:]:
            STEP_FUNCTIONS[retried](store, scenario)
        retried_s = time.monotonic() - started_retry
        assert content_checksums(store.connection, "tf_crash") == clean[-1]
        print(
            f"\nFAULT immediate shutdown mid {step} write: failed {time_to_fail:.3f} s after the stop with"
            f" {chain.splitlines()[0][:120]!r}; restart incl. crash recovery {restarted:.2f} s, retry"
            f" {retried_s:.2f} s"
        )
    finally:
        store.close()


def _restart(pgdata: Path, url: str, mode: str) -> None:
    _pg_ctl(pgdata, ["-m", mode, "stop"])
    _restart_stopped(pgdata, url)


def _restart_stopped(pgdata: Path, url: str) -> None:
    socket_dir = parse_qs(urlsplit(url).query)["host"][0]
    _pg_ctl(pgdata, ["-w", "-o", '-h ""', "-o", f"-k {socket_dir}", "-l", str(pgdata / "log"), "start"])


@pytest.mark.parametrize("mode", ["fast", "immediate"])
def test_a_store_idle_across_a_server_restart_serves_its_next_calls_on_a_new_connection(
    mode: str, private_server: tuple[str, Path], build_model
) -> None:
    url, pgdata = private_server
    store = Store(url, "tf_idle")
    try:
        store.upgrade()
        version = store.save_model(build_model())
        store.promote(version)
        before = store.connection.info.backend_pid
        _restart(pgdata, url, mode)
        assert store.active_model_version() == version  # no error: the hung-up connection was replaced
        assert store.connection.info.backend_pid != before
        store.write_run_report("daily", "after-restart", {"ok": True})  # a write works as well
        assert [r["run_key"] for r in store.run_reports("daily")] == ["after-restart"]
    finally:
        store.close()


def test_a_restart_inside_an_open_transaction_is_never_hidden_by_a_reconnect(
    private_server: tuple[str, Path],
) -> None:
    url, pgdata = private_server
    store = Store(url, "tf_intx")
    try:
        store.upgrade()
        lost = pytest.raises(DatabaseConnectionLostError, match="not committed")
        with lost, store.connection.transaction():
            store.write_run_report("daily", "inside", {"ok": True})
            _restart(pgdata, url, "fast")
            # The open transaction is lost: the Store must not swap the connection under it.
            store.connection.execute("SELECT 1")
        assert store.run_reports("daily") == []  # the next call reconnects; nothing was committed
    finally:
        store.close()


def test_a_connection_lost_at_commit_says_the_commit_is_uncertain_and_the_retry_succeeds(
    private_server: tuple[str, Path], build_model, monkeypatch: pytest.MonkeyPatch
) -> None:
    from traitflow.store import reports as store_reports

    url, pgdata = private_server
    store = Store(url, "tf_commit")
    try:
        store.upgrade()
        original = store_reports.write_run_report

        def write_then_stop(*args, **kwargs):
            original(*args, **kwargs)
            _pg_ctl(pgdata, ["-m", "immediate", "stop"])  # the body is done: COMMIT comes next

        monkeypatch.setattr(store_reports, "write_run_report", write_then_stop)
        with pytest.raises(DatabaseConnectionLostError, match="during COMMIT") as failure:
            store.write_run_report("daily", "at-commit", {"ok": True})
        assert failure.value.during_commit and "may or may not have committed" in str(failure.value)
        monkeypatch.setattr(store_reports, "write_run_report", original)
        _restart_stopped(pgdata, url)
        store.write_run_report("daily", "at-commit", {"ok": True})  # the retry, same Store
        assert [r["run_key"] for r in store.run_reports("daily")] == ["at-commit"]
    finally:
        store.close()


def test_the_connection_lost_message_says_what_happened_to_the_transaction() -> None:
    target = "postgresql://u:***@db/prod"
    plain = DatabaseConnectionLostError(target, "server closed the connection unexpectedly")
    commit = DatabaseConnectionLostError(target, "server closed the connection", during_commit=True)
    assert str(plain).startswith(
        "the connection to postgresql://u:***@db/prod was lost (server closed the connection unexpectedly)"
    )
    assert "was not committed" in str(plain) and "may or may not" not in str(plain)
    assert "during COMMIT" in str(commit) and "may or may not have committed" in str(commit)
    assert "idempotent" in str(commit) and "Retry the call" in str(commit)
    assert isinstance(commit, StoreError)


def test_table_checksums_cover_every_table_of_the_schema(store: Store) -> None:
    """``Store.table_checksums`` (the audits' "nothing changed") must see every table the
    migrations create; ``content_checksums`` above reads them from the catalog for that reason."""
    tables = {
        row[0]
        for row in store.connection.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = %s"
            " AND table_type = 'BASE TABLE'",
            (store.schema,),
        ).fetchall()
    }
    assert "trait_products" in tables
    assert set(store.table_checksums()) == tables
    assert set(store.table_counts()) == tables


def test_a_connection_lost_in_the_one_round_trip_ingest_is_uncertain_and_the_retry_stores_once(
    private_server: tuple[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """``few_rows``: BEGIN, the rows and COMMIT go out in one round trip, so a connection lost in
    it may or may not have committed (``during_commit``); the retry stores every event once."""
    from traitflow.events import PRESETS, validate_columns
    from traitflow.store import ingest as store_ingest

    url, pgdata = private_server
    store = Store(url, "tf_one_trip")
    try:
        store.upgrade()
        posted = {
            "customer_id": ["c1"] * 3,
            "event_time": [f"2024-01-0{day}T08:00:00Z" for day in (1, 2, 3)],
            "action": ["view"] * 3,
            "product_id": ["p1", "p2", "p3"],
            **{optional: [""] * 3 for optional in ("category", "price", "session_id")},
        }
        events = validate_columns(posted, PRESETS["canonical"], source="post")
        original = store_ingest.send_parameter_batch

        def queue_then_stop(*args, **kwargs):
            sent = original(*args, **kwargs)
            _pg_ctl(pgdata, ["-m", "immediate", "stop"])
            return sent

        monkeypatch.setattr(store_ingest, "send_parameter_batch", queue_then_stop)
        with pytest.raises(DatabaseConnectionLostError, match="during COMMIT") as failure:
            store.ingest_events(events, "post", "run", few_rows=True)
        assert failure.value.during_commit and "may or may not have committed" in str(failure.value)
        monkeypatch.setattr(store_ingest, "send_parameter_batch", original)
        _restart_stopped(pgdata, url)
        retry = store.ingest_events(events, "post", "run", few_rows=True)
        assert retry.n_inserted + retry.n_already_present == 3 and retry.n_rejected == 0
        assert store.table_counts()["events"] == 3
    finally:
        store.close()
