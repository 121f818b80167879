"""docker-compose.yaml and Dockerfile are consistent with each other, the repo and Airflow 3.3.

No Docker engine is needed: the compose file is parsed with PyYAML (which resolves the ``<<``
merge keys the file uses), validated against the Compose Specification's JSON schema (vendored in
tests/data, see its README) as written and as each profile's project with every variable at its
default, and checked structurally.
"""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from jsonschema import Draft201909Validator

REPO = Path(__file__).resolve().parents[1]
COMPOSE = REPO / "docker-compose.yaml"
DOCKERFILE = REPO / "Dockerfile"
COMPOSE_SPEC = REPO / "tests" / "data" / "compose-spec.json"
# The Compose profiles the stack is started with: none (the default stack), "celery" (workers),
# and "flower" beside it (Celery's monitoring UI).
PROFILES = {
    "default": frozenset(),
    "celery": frozenset({"celery"}),
    "celery+flower": frozenset({"celery", "flower"}),
}

DATABASES = {"airflow-db", "traitflow-db"}
CACHES = {"redis"}
WORKERS = {"airflow-worker", "airflow-worker-training"}
AIRFLOW_RUNTIME = {
    "airflow-apiserver",
    "airflow-scheduler",
    "airflow-dag-processor",
    "airflow-triggerer",
    "airflow-flower",
} | WORKERS
AIRFLOW_SERVICES = AIRFLOW_RUNTIME | {"airflow-init"}
LONG_RUNNING = DATABASES | CACHES | AIRFLOW_RUNTIME
PROJECT_MOUNTS = {"./dags", "./plugins", "./include", "./data"}
# ${VAR}, ${VAR:-default}; not $${VAR}, which compose passes through to the container's shell.
INTERPOLATION = re.compile(r"(?<!\$)\$\{([A-Z0-9_]+)(?::?-[^}]*)?\}")
# What compose substitutes with no .env: ${VAR:-default} and ${VAR-default} -> default, ${VAR} ->
# empty, $$ -> $.
SUBSTITUTION = re.compile(r"\$\$|\$\{[A-Z0-9_]+(?::?-([^}]*))?\}")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, Any]:
    return compose["services"]


@pytest.fixture(scope="module")
def compose_spec() -> Draft201909Validator:
    schema = json.loads(COMPOSE_SPEC.read_text())
    Draft201909Validator.check_schema(schema)  # the vendored file is a valid draft 2019-09 schema
    return Draft201909Validator(schema)


def _defaults(value: Any) -> Any:
    """``value`` with every variable substituted as compose does without an .env file."""
    if isinstance(value, str):
        return SUBSTITUTION.sub(lambda m: "$" if m.group(0) == "$$" else m.group(1) or "", value)
    if isinstance(value, dict):
        return {key: _defaults(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_defaults(item) for item in value]
    return value


def project(compose: dict[str, Any], profiles: frozenset[str]) -> dict[str, Any]:
    """The project ``docker compose --profile P config`` sees without an .env: variables at their
    defaults, only the services without ``profiles`` or with one of ``profiles``."""
    resolved = _defaults(compose)
    resolved["services"] = {
        name: service
        for name, service in resolved["services"].items()
        if not service.get("profiles") or profiles & set(service["profiles"])
    }
    return resolved


def spec_errors(validator: Draft201909Validator, document: dict[str, Any]) -> list[str]:
    """Every schema violation as ``path: message``, with the reasons each alternative of a
    ``oneOf`` failed (e.g. a long-syntax volume with an unknown key)."""
    found: list[str] = []
    pending = list(validator.iter_errors(document))
    while pending:
        error = pending.pop()
        found.append(f"{error.json_path}: {error.message}")
        pending.extend(error.context or [])
    return sorted(found)


def missing_references(document: dict[str, Any]) -> list[str]:
    """``depends_on`` targets and named volumes the document's services use but it lacks."""
    services = document["services"]
    missing = [
        f"{name} depends on {target}"
        for name, service in services.items()
        for target in service.get("depends_on") or {}
        if target not in services
    ]
    missing += [
        f"{name} mounts volume {volume}"
        for name, service in services.items()
        for volume in _named_volumes(service)
        if volume not in (document.get("volumes") or {})
    ]
    return missing


def _env(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):  # KEY=VALUE form
        env = dict(item.split("=", 1) for item in env)
    return {k: str(v) for k, v in env.items()}


def _binds(service: dict[str, Any]) -> list[dict[str, Any]]:
    """Bind mounts of a service as dicts (short ``src:dst`` and long syntax)."""
    out = []
    for volume in service.get("volumes") or []:
        if isinstance(volume, str):
            source, target = volume.split(":")[:2]
            if source.startswith((".", "/")):
                out.append({"source": source, "target": target})
        elif volume.get("type") == "bind":
            out.append(volume)
    return out


def _named_volumes(service: dict[str, Any]) -> set[str]:
    names = set()
    for volume in service.get("volumes") or []:
        source = volume.split(":")[0] if isinstance(volume, str) else volume.get("source", "")
        is_named = isinstance(volume, str) or volume.get("type") == "volume"
        if is_named and source and not source.startswith((".", "/")):
            names.add(source)
    return names


def _gitignored_dirs() -> set[str]:
    lines = (REPO / ".gitignore").read_text().splitlines()
    return {line.strip().strip("/") for line in lines if line.strip() and not line.startswith("#")}


@pytest.mark.parametrize("profile", PROFILES)
def test_each_profile_is_a_valid_compose_project(
    compose: dict[str, Any], compose_spec: Draft201909Validator, profile: str
) -> None:
    assert spec_errors(compose_spec, compose) == []  # the file as written
    resolved = project(compose, PROFILES[profile])
    assert spec_errors(compose_spec, resolved) == []  # what compose validates after substitution
    assert missing_references(resolved) == []  # no service needs one the profile leaves out
    assert "version" not in compose  # obsolete under the Compose Specification (Compose v2)


def _long_bind(service: dict[str, Any]) -> dict[str, Any]:
    return next(v for v in service["volumes"] if isinstance(v, dict) and v["type"] == "bind")


BROKEN = {
    "misspelled service key": (
        lambda c: c["services"]["redis"].update(helthcheck=c["services"]["redis"].pop("healthcheck")),
        "'helthcheck' does not match any of the regexes",
    ),
    "unknown depends_on condition": (
        lambda c: c["services"]["airflow-scheduler"]["depends_on"]["airflow-init"].update(condition="done"),
        "is not valid under any of the given schemas",
    ),
    "unknown bind option": (
        lambda c: _long_bind(c["services"]["airflow-apiserver"])["bind"].update(create_host_dir=True),
        "bind: 'create_host_dir' does not match any of the regexes",
    ),
    "wrong value type": (
        lambda c: c["services"]["redis"]["healthcheck"].update(retries="five"),
        "'five' is not of type 'number'",
    ),
    "unknown top-level key": (
        lambda c: c.update(service={}),
        "'service' does not match any of the regexes",
    ),
    "profiles not a list": (
        lambda c: c["services"]["redis"].update(profiles="celery"),
        "'celery' is not of type 'array'",
    ),
}


@pytest.mark.parametrize("mistake", BROKEN)
def test_the_schema_check_rejects_a_broken_file(
    compose: dict[str, Any], compose_spec: Draft201909Validator, mistake: str
) -> None:
    broken = json.loads(json.dumps(compose))  # a deep copy without the shared merge-key objects
    break_it, expected = BROKEN[mistake]
    break_it(broken)
    errors = spec_errors(compose_spec, broken)
    assert any(expected in error for error in errors), errors


def test_the_profile_check_rejects_a_default_service_needing_a_profile_only_one(
    compose: dict[str, Any], compose_spec: Draft201909Validator
) -> None:
    broken = copy.deepcopy(compose)
    broken["services"]["flower"] = {"image": "x", "profiles": ["celery"]}
    broken["services"]["redis"]["depends_on"] = {"flower": {"condition": "service_started"}}
    assert spec_errors(compose_spec, broken) == []  # valid Compose: only the profile set is broken
    assert missing_references(project(broken, PROFILES["default"])) == ["redis depends on flower"]
    assert missing_references(project(broken, PROFILES["celery"])) == []


def test_services(services: dict[str, Any]) -> None:
    assert set(services) == LONG_RUNNING | {"airflow-init"}
    for name in DATABASES:
        assert services[name]["image"] == "postgres:15"
    assert services["redis"]["image"].startswith("redis:")


def test_airflow_image_is_built_from_the_pinned_airflow() -> None:
    pins = dict(
        line.split("==", 1) for line in (REPO / "requirements.txt").read_text().splitlines() if "==" in line
    )
    base = re.search(r"^FROM\s+(\S+)", DOCKERFILE.read_text(), re.MULTILINE)
    assert base is not None
    assert base.group(1) == f"apache/airflow:{pins['apache-airflow']}-python3.11"
    text = DOCKERFILE.read_text()
    assert "-r requirements.txt -c constraints.txt" in text
    assert "pip install --no-cache-dir --no-deps -e ." in text


def test_every_long_running_service_has_a_healthcheck(services: dict[str, Any]) -> None:
    for name in LONG_RUNNING:
        check = services[name].get("healthcheck")
        assert check and check.get("test"), name
        assert {"interval", "timeout", "retries"} <= set(check), name
    scheduler_env = _env(services["airflow-scheduler"])
    # The scheduler's health endpoint (port 8974) only exists when enabled.
    assert scheduler_env["AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK"] == "True"


def test_startup_order(services: dict[str, Any]) -> None:
    for name, service in services.items():
        for target, spec in (service.get("depends_on") or {}).items():
            assert target in services, (name, target)
            assert spec["condition"] in ("service_healthy", "service_completed_successfully"), (name, target)
            if spec["condition"] == "service_healthy":
                assert "healthcheck" in services[target], (name, target)
    for name in AIRFLOW_SERVICES:
        deps = services[name]["depends_on"]
        for db in DATABASES:
            assert deps[db]["condition"] == "service_healthy", (name, db)
    for name in AIRFLOW_RUNTIME:
        assert services[name]["depends_on"]["airflow-init"]["condition"] == "service_completed_successfully"
    # Task workloads call the api-server's Execution API; start the clients after it is healthy.
    for name in ("airflow-scheduler", "airflow-triggerer"):
        assert services[name]["depends_on"]["airflow-apiserver"]["condition"] == "service_healthy"
    assert services["airflow-init"].get("restart") == "no"


def test_airflow_environment(services: dict[str, Any]) -> None:
    envs = {name: _env(services[name]) for name in AIRFLOW_SERVICES}
    shared = {
        "AIRFLOW__CORE__EXECUTOR",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN",
        "AIRFLOW__API_AUTH__JWT_SECRET",
        "AIRFLOW__API__SECRET_KEY",
        "AIRFLOW__CORE__FERNET_KEY",
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL",
        "AIRFLOW_CONN_TRAITFLOW_DB",
        "AIRFLOW__CORE__DAGS_FOLDER",
        "TRAITFLOW_DATA_DIR",
        "TRAITFLOW_REDIS_URL",
    }
    for key in shared:
        values = {name: env.get(key) for name, env in envs.items()}
        assert None not in values.values(), (key, values)
        assert len(set(values.values())) == 1, (key, values)  # e.g. one JWT secret for all
    env = envs["airflow-scheduler"]
    assert _defaults(env["AIRFLOW__CORE__EXECUTOR"]) == "LocalExecutor"  # CeleryExecutor: set in .env
    assert env["AIRFLOW__CORE__LOAD_EXAMPLES"] == "False"
    execution_api = urlsplit(env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"])
    assert execution_api.hostname == "airflow-apiserver" and execution_api.path == "/execution/"
    assert execution_api.port == 8080 and "8080" in services["airflow-apiserver"]["ports"][0]
    metadata = urlsplit(INTERPOLATION.sub("x", env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]))
    assert metadata.scheme == "postgresql+psycopg2" and metadata.hostname == "airflow-db"
    traitflow = urlsplit(INTERPOLATION.sub("x", env["AIRFLOW_CONN_TRAITFLOW_DB"]))
    assert traitflow.scheme == "postgresql" and traitflow.hostname == "traitflow-db"
    assert traitflow.path == "/" + _env(services["traitflow-db"])["POSTGRES_DB"]


def test_no_literal_secrets(services: dict[str, Any]) -> None:
    """Credentials are ${VAR:-local-dev-default} interpolations, overridable from .env."""
    for name, service in services.items():
        for key, value in _env(service).items():
            if re.search(r"PASSWORD|SECRET|FERNET", key) and not key.endswith("_FILE"):
                assert value.startswith("${"), (name, key)
            parts = urlsplit(value) if "://" in value else None
            if parts and "@" in parts.netloc:
                user_info = parts.netloc.rsplit("@", 1)[0]
                assert ":" not in user_info or INTERPOLATION.search(user_info.split(":", 1)[1]), (name, key)


def test_env_example_documents_every_variable() -> None:
    lines = [line for line in COMPOSE.read_text().splitlines() if not line.lstrip().startswith("#")]
    used = set(INTERPOLATION.findall("\n".join(lines)))
    example = (REPO / ".env.example").read_text()
    documented = set(re.findall(r"^([A-Z0-9_]+)=", example, re.MULTILINE))
    assert used <= documented, sorted(used - documented)


def test_project_is_mounted_where_airflow_looks(services: dict[str, Any]) -> None:
    for name in AIRFLOW_SERVICES:
        binds = {b["source"]: b["target"] for b in _binds(services[name])}
        assert set(binds) >= PROJECT_MOUNTS, name
        env = _env(services[name])
        assert binds["./dags"] == env["AIRFLOW__CORE__DAGS_FOLDER"]
        assert binds["./plugins"] == env["AIRFLOW__CORE__PLUGINS_FOLDER"]
        assert binds["./data"] == env["TRAITFLOW_DATA_DIR"]
        # The image installs the package editable from /opt/traitflow, so the mount replaces it.
        assert binds["./include"] == "/opt/traitflow/include"
        assert env["TRAITFLOW_INPUT_DIR"].startswith(("${", env["TRAITFLOW_DATA_DIR"]))


def test_host_paths_exist(compose: dict[str, Any], services: dict[str, Any]) -> None:
    ignored = _gitignored_dirs()
    for name, service in services.items():
        build = service.get("build")
        if build:
            context = REPO / build["context"]
            assert context.is_dir(), name
            assert (context / build.get("dockerfile", "Dockerfile")).is_file(), name
        for bind in _binds(service):
            path = REPO / bind["source"]
            if (bind.get("bind") or {}).get("create_host_path"):
                # Generated, git-ignored folders (data/) are created by compose on first `up`.
                assert path.is_dir() or bind["source"].lstrip("./") in ignored, (name, bind)
            else:
                assert path.exists(), (name, bind["source"])
        for volume in _named_volumes(service):
            assert volume in (compose.get("volumes") or {}), (name, volume)


def test_dockerfile_copies_only_existing_paths() -> None:
    for line in DOCKERFILE.read_text().splitlines():
        if line.startswith("COPY"):
            sources = [token for token in line.split()[1:-1] if not token.startswith("--")]
            for source in sources:
                assert (REPO / source).exists(), source
    ignore = (REPO / ".dockerignore").read_text().splitlines()
    assert {".git", ".venv", "data", ".env"} <= set(ignore)  # keep state and secrets out of the image


def test_init_prepares_airflow_and_traitflow(services: dict[str, Any]) -> None:
    init = services["airflow-init"]
    script = "\n".join(init["command"]) if isinstance(init["command"], list) else init["command"]
    for step in ("airflow db migrate", "traitflow db upgrade", "traitflow sample"):
        assert step in script, step
    assert "set -euo pipefail" in script  # a failed step must fail the init, not start Airflow
    assert script.index("airflow db migrate") < script.index("traitflow db upgrade")


def test_traitflow_db_port_is_local_only(services: dict[str, Any]) -> None:
    for port in services["traitflow-db"].get("ports", []):
        assert str(port).startswith("127.0.0.1:"), port
    assert "ports" not in services["airflow-db"]


def test_redis_is_a_private_cache_the_airflow_services_use(services: dict[str, Any]) -> None:
    redis = services["redis"]
    assert "ports" not in redis and not redis.get("volumes")  # reachable in the stack only, no state
    command = redis["command"]
    assert command[0] == "redis-server"
    options = dict(zip(command[1::2], command[2::2], strict=True))
    assert options["--save"] == "" and options["--appendonly"] == "no"
    # Evict only keys with a TTL (cached profiles), never the generation counters writes bump.
    assert options["--maxmemory-policy"] == "volatile-lru"
    for name in AIRFLOW_SERVICES:
        env = _env(services[name])
        url = urlsplit(env["TRAITFLOW_REDIS_URL"])
        assert (url.scheme, url.hostname, url.port) == ("redis", "redis", 6379), name
        assert int(env["TRAITFLOW_REDIS_TTL_SECONDS"]) >= 1, name
    # Redis is optional for the cache (reads fall back to PostgreSQL): only the Celery services,
    # for which it is the broker, wait for it.
    for name, service in services.items():
        if "redis" in (service.get("depends_on") or {}):
            assert service.get("profiles") and name in AIRFLOW_RUNTIME, name


def test_metrics_of_all_api_server_workers_and_how_to_scrape_them(services: dict[str, Any]) -> None:
    api = services["airflow-apiserver"]
    multiproc = _env(api)["PROMETHEUS_MULTIPROC_DIR"]
    assert multiproc in api["tmpfs"]  # empty at every start, as prometheus-client requires
    text = COMPOSE.read_text()
    assert "metrics_path: /traitflow/metrics" in text
    assert "STATSD_ON" in text and "OTEL_ON" in text


def _worker_queues(service: dict[str, Any]) -> set[str]:
    command = service["command"]
    assert command[:2] == ["celery", "worker"], command  # the image's entrypoint prepends `airflow`
    return set(command[command.index("--queues") + 1].split(","))


def test_celery_profile(compose: dict[str, Any], services: dict[str, Any]) -> None:
    default = project(compose, PROFILES["default"])["services"]
    celery = project(compose, PROFILES["celery"])["services"]
    assert set(celery) - set(default) == WORKERS  # flower is its own opt-in profile
    env = _defaults(_env(services["airflow-scheduler"]))
    # Every queue the DAGs route to is served: Airflow's default one and the heavy tasks' ones.
    routed = {"default", env["TRAITFLOW_TRAINING_QUEUE"], env["TRAITFLOW_PROFILES_QUEUE"]}
    assert set().union(*(_worker_queues(celery[name]) for name in WORKERS)) == routed
    # Training runs alone on its worker, never beside shards; the shard workers scale out.
    training = celery["airflow-worker-training"]["command"]
    assert _worker_queues(celery["airflow-worker-training"]) == {env["TRAITFLOW_TRAINING_QUEUE"]}
    assert training[training.index("--concurrency") + 1] == "1"
    scalable = celery["airflow-worker"]
    assert not {"container_name", "ports", "hostname"} & set(scalable), "--scale needs unnamed replicas"
    # Broker: the stack's Redis on its own database number, not the profile cache's.
    broker = urlsplit(env["AIRFLOW__CELERY__BROKER_URL"])
    cache = urlsplit(env["TRAITFLOW_REDIS_URL"])
    assert (broker.scheme, broker.hostname, broker.port) == ("redis", "redis", 6379)
    assert broker.path != cache.path and broker.path.strip("/").isdigit()
    # Results: the metadata database, with the same credentials as Airflow's own connection.
    backend = env["AIRFLOW__CELERY__RESULT_BACKEND"]
    assert backend == "db+" + env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]
    # A task not acknowledged in time is redelivered: longer than the 6 h training timeout.
    assert int(env["AIRFLOW__CELERY_BROKER_TRANSPORT_OPTIONS__VISIBILITY_TIMEOUT"]) > 6 * 3600
    for name in WORKERS:
        deps = celery[name]["depends_on"]
        assert deps["redis"]["condition"] == deps["airflow-apiserver"]["condition"] == "service_healthy"
        assert _env(celery[name])["DUMB_INIT_SETSID"] == "0"  # TERM to Celery itself: a warm shutdown


def test_flower_is_opt_in_and_local_only(compose: dict[str, Any]) -> None:
    flower = project(compose, PROFILES["celery+flower"])["services"]["airflow-flower"]
    assert flower["command"] == ["celery", "flower"]
    assert [str(port).split(":")[0] for port in flower["ports"]] == ["127.0.0.1"]
    assert "airflow-flower" not in project(compose, PROFILES["celery"])["services"]


def test_celery_setup_is_documented() -> None:
    doc = (REPO / "docs" / "celery.md").read_text()
    header = COMPOSE.read_text().split("\nx-airflow-env")[0]
    for text in (header, doc):
        assert "COMPOSE_PROFILES=celery" in text and "AIRFLOW_EXECUTOR=CeleryExecutor" in text
        assert "--scale airflow-worker=" in text
    for remote_setting in ("CELERY__BROKER_URL", "API_AUTH__JWT_SECRET", "CORE__EXECUTION_API_SERVER_URL"):
        assert f"AIRFLOW__{remote_setting}" in doc, remote_setting
    assert "docs/celery.md" in (REPO / "README.md").read_text()
