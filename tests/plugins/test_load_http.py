"""bench/load_http.py, the load generator's keep-alive client, against a real loopback HTTP server:
headers and bodies as sent, one connection for many requests, a fresh one after a failure."""

from __future__ import annotations

import http.client
import json
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
from load_http import HTTPStatusError, KeepAliveClient


class _Recorder(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive
    connections: ClassVar[list[int]] = []
    seen: ClassVar[list[dict[str, Any]]] = []

    def setup(self) -> None:
        super().setup()
        self.connections.append(id(self.connection))

    def log_message(self, *args: Any) -> None:  # quiet
        pass

    def _answer(self, status: int, payload: Any) -> None:
        body = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        self.seen.append({"method": "GET", "path": self.path, "auth": self.headers.get("Authorization")})
        if self.path.endswith("/drop"):
            self.close_connection = True  # no answer at all: the client sees the connection end
            return
        self._answer(500 if self.path.endswith("/fail") else 200, {"path": self.path})

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.seen.append(
            {"method": "POST", "type": self.headers.get("Content-Type"), "body": json.loads(body)}
        )
        self._answer(200, {"n": len(json.loads(body)["events"])})


@pytest.fixture
def server() -> Iterator[str]:
    _Recorder.connections, _Recorder.seen = [], []
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/traitflow"
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_requests_share_one_connection_and_carry_the_headers_and_body(server: str) -> None:
    client = KeepAliveClient(server, {"Authorization": "Bearer t0k"})
    try:
        reply = client.get("/api/customers/c1")
        assert reply.status_code == 200 and reply.json() == {"path": "/traitflow/api/customers/c1"}
        posted = client.post("/api/events", json={"events": [{"a": 1}, {"a": "é"}]})
        assert posted.json() == {"n": 2}
        assert client.get("/api/customers/c2").status_code == 200
    finally:
        client.close()
    assert len(_Recorder.connections) == 1
    assert _Recorder.seen[0]["auth"] == "Bearer t0k"
    assert _Recorder.seen[1] == {
        "method": "POST",
        "type": "application/json",
        "body": {"events": [{"a": 1}, {"a": "é"}]},
    }


def test_a_dropped_connection_raises_once_and_the_next_request_reconnects(server: str) -> None:
    client = KeepAliveClient(server, {})
    try:
        assert client.get("/before").status_code == 200
        with pytest.raises(http.client.RemoteDisconnected):
            client.get("/drop")
        assert client.get("/after").json() == {"path": "/traitflow/after"}
    finally:
        client.close()
    assert len(_Recorder.connections) == 2


def test_an_error_status_is_returned_and_raised_on_demand(server: str) -> None:
    client = KeepAliveClient(server, {})
    try:
        reply = client.get("/fail")
        assert reply.status_code == 500
        with pytest.raises(HTTPStatusError, match="HTTP 500"):
            reply.raise_for_status()
        client.get("/ok").raise_for_status()
    finally:
        client.close()


def test_only_plain_http_base_urls() -> None:
    with pytest.raises(ValueError, match="http://"):
        KeepAliveClient("https://example.org", {})
