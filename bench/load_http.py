"""The load generator's HTTP client: one keep-alive connection on the standard library's
``http.client``, with the few methods the load test calls (``get``, ``post``, ``close``).

The generator shares the machine with the server it measures, and every client thread shares
one interpreter lock, so its own cost per request is both CPU taken from the server and latency
added to every sample. ``httpx`` took about 1 ms of CPU per loopback request here, ``http.client``
about 0.25 ms (a trivial local server, 2,000 requests each), so the clients use this one.
"""

from __future__ import annotations

import http.client
import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit


class HTTPStatusError(RuntimeError):
    """``Reply.raise_for_status`` of a 4xx or 5xx answer."""


@dataclass(frozen=True)
class Reply:
    """An answer: what the load test reads of ``httpx.Response`` (status, text, JSON)."""

    status_code: int
    content: bytes

    @property
    def text(self) -> str:
        return self.content.decode("utf-8")

    def json(self) -> Any:
        return json.loads(self.content)

    def raise_for_status(self) -> None:
        if self.status_code >= 400:
            raise HTTPStatusError(f"HTTP {self.status_code}: {self.text[:200]}")


class KeepAliveClient:
    """Requests to ``base_url`` over one persistent connection, each with ``headers``.

    After a failed request the connection is closed, so the next one opens a fresh connection
    (the server may have dropped the old one); the failure itself is raised to the caller, who
    records it. Not thread-safe: one client per thread, as the load test uses it.
    """

    def __init__(self, base_url: str, headers: dict[str, str], timeout: float = 30.0) -> None:
        parts = urlsplit(base_url)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"an http://host[:port][/path] base URL is needed, got {base_url!r}")
        self._prefix = parts.path.rstrip("/")
        self._headers = dict(headers)
        self._connection = http.client.HTTPConnection(parts.hostname, parts.port or 80, timeout=timeout)

    def get(self, path: str) -> Reply:
        return self._request("GET", path, None, {})

    def post(self, path: str, *, json: Any) -> Reply:
        body = _dumps(json)
        return self._request("POST", path, body, {"Content-Type": "application/json"})

    def close(self) -> None:
        self._connection.close()

    def _request(self, method: str, path: str, body: bytes | None, extra: dict[str, str]) -> Reply:
        try:
            self._connection.request(
                method, self._prefix + path, body=body, headers={**self._headers, **extra}
            )
            response = self._connection.getresponse()
            return Reply(response.status, response.read())
        except Exception:
            self._connection.close()  # the next request reconnects
            raise


def _dumps(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode("utf-8")
