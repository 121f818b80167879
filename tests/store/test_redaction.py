"""Passwords never appear in errors: ``traitflow.redaction`` on known inputs, and the CLI's output
when the connection setting is wrong in every shape a person might type it."""

from __future__ import annotations

import json
import logging
import traceback

import pytest

from traitflow.cli import main
from traitflow.redaction import redact, secrets_of
from traitflow.store import Store, StoreError

PASSWORD = "Pw-9f3a7c1e"
CLOSED_PORT = 1  # nothing listens: connection refused at once


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("postgresql://tf:s3cr3t-pw@db:5432/tf", "postgresql://tf:***@db:5432/tf"),
        ("failed: 'tf:s3cr3t-pw@db:5432/tf'", "failed: 'tf:***@db:5432/tf'"),
        ("host=db user=tf password=s3cr3t-pw dbname=tf", "host=db user=tf password=*** dbname=tf"),
        ("host=db password='a b\\' c' dbname=tf", "host=db password=*** dbname=tf"),
        (
            "postgresql://db/tf?sslmode=require&password=s3cr3t-pw&x=1",
            "postgresql://db/tf?sslmode=require&password=***&x=1",
        ),
        (
            '{"login": "tf", "password": "s3\\"cr3t", "port": 5}',
            '{"login": "tf", "password": "***", "port": 5}',
        ),
        ("{'password': 's3cr3t-pw', 'host': 'db'}", "{'password': '***', 'host': 'db'}"),
        ("postgresql://tf:@/tf?host=/tmp/x", "postgresql://tf:@/tf?host=/tmp/x"),  # no password: unchanged
        ("at 12:30 the job ended", "at 12:30 the job ended"),
    ],
)
def test_redact_masks_every_connection_string_shape(text: str, expected: str) -> None:
    assert redact(text) == expected


def test_known_secrets_are_scrubbed_in_every_spelling() -> None:
    secret = 'p@ss w"rd'
    message = f"echo {secret} / p%40ss%20w%22rd / {json.dumps(secret)}"
    assert redact(message, [secret]) == 'echo *** / *** / "***"'
    assert redact("short pw xy", ["xy"]) == "short pw xy"  # too short to scrub by value


@pytest.mark.parametrize(
    ("dsn", "secrets"),
    [
        ("postgresql://u:p%40ss@h/db", {"p%40ss", "p@ss"}),
        ("host=h password='a b' user=u", {"a b"}),
        ('{"password": "x\\"y1"}', {'x"y1'}),
        ("postgresql://u@h/db", set()),
    ],
)
def test_secrets_of_finds_the_password(dsn: str, secrets: set[str]) -> None:
    assert set(secrets_of(dsn)) == secrets


BAD_SETTINGS = {
    "keyword_dsn_wrong_password": f"host=127.0.0.1 port={CLOSED_PORT} user=tf password={PASSWORD} dbname=tf",
    "url_without_scheme": f"tf:{PASSWORD}@127.0.0.1:{CLOSED_PORT}/tf",
    "malformed_uri": f"postgresql://tf:{PASSWORD}@[127.0.0.1:{CLOSED_PORT}/tf",
    "unreachable_url": f"postgresql://tf:{PASSWORD}@127.0.0.1:{CLOSED_PORT}/tf",
    "bad_option": f"postgresql://tf:{PASSWORD}@127.0.0.1:{CLOSED_PORT}/tf?sslmode=bogus",
    "password_in_query": f"postgresql://127.0.0.1:{CLOSED_PORT}/tf?password={PASSWORD}&connect_timeout=x",
    "unsupported_scheme": f"mysql://tf:{PASSWORD}@127.0.0.1/tf",
}


@pytest.mark.parametrize("setting", sorted(BAD_SETTINGS))
@pytest.mark.parametrize("via", ["argument", "environment"])
def test_cli_errors_never_print_the_password(
    setting: str,
    via: str,
    capfd: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    caplog.set_level(logging.DEBUG)
    url = BAD_SETTINGS[setting]
    argv = ["traits"] if via == "environment" else ["traits", "--database-url", url]
    if via == "environment":
        monkeypatch.setenv("TRAITFLOW_DATABASE_URL", url)
    try:
        code = main(argv)
    except SystemExit as exit_:  # the store commands exit with status 1 after their message
        code = exit_.code
    out, err = capfd.readouterr()
    assert code != 0
    assert "traitflow: error:" in err  # it failed with a message, which must not hold the password
    assert PASSWORD not in out + err + caplog.text


@pytest.mark.parametrize("setting", sorted(BAD_SETTINGS))
def test_store_errors_never_hold_the_password(setting: str) -> None:
    with pytest.raises((StoreError, ValueError)) as failure:
        Store(BAD_SETTINGS[setting])
    # The traceback as any logger prints it, with every exception chained to it.
    printed = "".join(traceback.format_exception(failure.value))
    assert failure.type.__name__ in printed
    assert PASSWORD not in printed
    assert PASSWORD not in repr(failure.value)
