"""Keep database passwords out of messages: one ``redact`` for every error that may carry one.

A connection string reaches error messages in many shapes: a URL (``postgresql://u:pw@h/db``), a
URL whose scheme was forgotten (``u:pw@h/db``), a libpq keyword DSN (``host=h password=pw``), an
Airflow connection as JSON (``{"password": "pw"}``) or a Python dict repr, and psycopg/libpq echo
the DSN they were given in some of their own messages (a malformed URI, for one). ``redact``
masks the password in each shape by pattern, and also replaces every known secret value
(``secrets_of(dsn)`` extracts them) wherever it appears, which catches shapes no pattern
foresaw. Pure text functions: no psycopg, no Airflow.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable
from urllib.parse import parse_qsl, quote, unquote, urlsplit

MASK = "***"
# Where this process's database credentials come from: their passwords are always scrubbed.
CREDENTIAL_ENV_VARS = ("TRAITFLOW_DATABASE_URL", "AIRFLOW_CONN_TRAITFLOW_DB", "PGPASSWORD")
# Shorter values are not scrubbed by value (a 1-3 character "password" would blank out every
# occurrence of those letters); the patterns still mask them in connection strings.
MIN_SECRET_LENGTH = 4

# user:password@ in URLs, with or without a scheme. The password runs to the last '@' before
# whitespace or a quote, so an unescaped '@' inside it is masked too.
_USERINFO = re.compile(r"(?P<user>(?:^|(?<=[\s'\"(=,/]))[^\s:/@'\"()]*):(?!//)(?P<pw>[^\s'\"]*)@")
# password=... as a URL query parameter (ends at '&' or '#').
_QUERY_PASSWORD = re.compile(r"(?P<key>(?<=[?&])password=)(?P<pw>(?!\*\*\*)[^&#\s'\"]*)", re.I)
# password=... in a keyword DSN: a single-quoted value (backslash escapes) or up to whitespace.
_KEYWORD_PASSWORD = re.compile(
    r"(?P<key>(?<![?&])\bpassword\s*=\s*)(?P<pw>(?!\*\*\*)(?:'(?:[^'\\]|\\.)*'|[^\s'\"]+))", re.I
)
# "password": "..." in JSON, or 'password': '...' in a Python repr.
_QUOTED_PASSWORD = re.compile(
    r"(?P<key>(?P<q>[\"'])password(?P=q)\s*:\s*)(?P<pw>\"(?:[^\"\\]|\\.)*\"|'(?:[^'\\]|\\.)*')", re.I
)


def redact(text: object, secrets: Iterable[str | None] = ()) -> str:
    """``str(text)`` with passwords in URLs, keyword DSNs and connection JSON replaced by ``***``,
    and every value in ``secrets`` (plus ``PGPASSWORD``) replaced wherever it appears, also in its
    URL-quoted and JSON-escaped spellings; so are the passwords in ``CREDENTIAL_ENV_VARS``."""
    out = str(text)
    out = _QUOTED_PASSWORD.sub(lambda m: f"{m['key']}{m['pw'][0]}{MASK}{m['pw'][0]}", out)
    out = _QUERY_PASSWORD.sub(lambda m: f"{m['key']}{MASK}", out)
    out = _KEYWORD_PASSWORD.sub(lambda m: f"{m['key']}{MASK}", out)
    out = _USERINFO.sub(lambda m: f"{m['user']}:{MASK}@" if m["pw"] else m[0], out)
    values = {s for s in (*secrets, *environment_secrets()) if s}
    spellings = {v for s in values for v in (s, quote(s, safe=""), quote(s), json.dumps(s)[1:-1])}
    # Longest first: a secret that contains another is replaced whole.
    for value in sorted((v for v in spellings if len(v) >= MIN_SECRET_LENGTH), key=len, reverse=True):
        out = out.replace(value, MASK)
    return out


def secrets_of(dsn: object) -> list[str]:
    """The password(s) a connection string carries (URL userinfo or query, keyword DSN, JSON), as
    written and decoded; best effort on malformed input, never raising."""
    text = str(dsn) if dsn is not None else ""
    found: list[str] = []
    for pattern in (_QUOTED_PASSWORD, _QUERY_PASSWORD, _KEYWORD_PASSWORD, _USERINFO):
        for match in pattern.finditer(text):
            value = match["pw"]
            if pattern is _QUOTED_PASSWORD:
                try:
                    value = json.loads(value) if value.startswith('"') else value[1:-1]
                except ValueError:
                    value = value[1:-1]
            elif pattern is _KEYWORD_PASSWORD and value.startswith("'"):
                value = re.sub(r"\\(.)", r"\1", value[1:-1])
            found += [value, unquote(value)]
    try:
        parts = urlsplit(text)
        found += [parts.password or "", *(v for k, v in parse_qsl(parts.query) if k.lower() == "password")]
    except ValueError:
        pass
    return [s for s in dict.fromkeys(found) if s and s != MASK]


def environment_secrets() -> list[str]:
    """Passwords held by ``CREDENTIAL_ENV_VARS`` (``PGPASSWORD`` is one as a whole)."""
    found = [os.environ.get("PGPASSWORD", "")]
    for name in CREDENTIAL_ENV_VARS[:-1]:
        found += secrets_of(os.environ.get(name, ""))
    return [s for s in found if s]
