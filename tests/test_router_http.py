"""The router's own HTTP/1.1 server (arrow_rl/serving/httpserver.py), spoken to over raw sockets:
keep-alive, pipelining, refusals that close the connection, HTTP/1.0, ``Expect: 100-continue``."""

from __future__ import annotations

import http.client
import json
import socket
import time

from arrow_rl.cluster.live.fake_vllm import expected_tokens
from live_fixtures import completion, live_rig


def _raw(port: int, data: bytes, timeout: float = 30.0) -> bytes:
    """Send ``data`` and read until the router closes the connection."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(data)
        out = b""
        while chunk := s.recv(65536):
            out += chunk
    return out


def _post(body: bytes, path: bytes = b"/v1/completions", extra: bytes = b"", version: bytes = b"1.1") -> bytes:
    return (b"POST " + path + b" HTTP/" + version + b"\r\nHost: t\r\nContent-Type: application/json\r\n" + extra
            + b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)


def _sse_tokens(text: str) -> list[int]:
    out = []
    for line in text.splitlines():
        if line.startswith("data: {"):
            for ch in json.loads(line[6:]).get("choices") or []:
                out.extend(ch.get("token_ids") or [])
    return out


def test_keep_alive_serves_streams_and_json_on_one_connection_and_reuses_upstream_connections():
    with live_rig() as rig:
        conn = http.client.HTTPConnection("127.0.0.1", rig.router_server.port, timeout=30)
        for k in range(6):
            body = completion(prompt_len=40, max_tokens=4, stream=k % 2 == 0, seed=k)
            conn.request("POST", "/v1/completions", json.dumps(body), {"Content-Type": "application/json",
                                                                       "X-Request-Id": f"req-{k}"})
            r = conn.getresponse()
            assert r.status == 200 and r.getheader("x-request-id") == f"req-{k}"
            text = r.read().decode()
            tokens = _sse_tokens(text) if body["stream"] else json.loads(text)["choices"][0]["token_ids"]
            assert tokens == expected_tokens(body["prompt"], 4)
        conn.request("GET", "/health")
        assert conn.getresponse().status == 200  # the ASGI bridge on the same connection
        conn.close()
        # 6 requests, 12 legs, one at a time: one connection per instance is enough (a loaded box
        # may see one dropped after 4 s idle).
        assert rig.router.pool.connects <= 4


def test_pipelined_requests_are_answered_in_order():
    with live_rig() as rig:
        a = json.dumps(completion(prompt_len=30, max_tokens=3, stream=True, seed=1)).encode()
        b = json.dumps(completion(prompt_len=30, max_tokens=5, stream=False, seed=2)).encode()
        out = _raw(rig.router_server.port, _post(a) + _post(b, extra=b"Connection: close\r\n"))
        first, second = out.split(b"HTTP/1.1 200 OK", 2)[1:]
        assert b"text/event-stream" in first and b"data: [DONE]" in first
        assert second.split(b"\r\n\r\n", 1)[1].count(b'"token_ids"') == 1
        assert len(rig.router.records) == 2


def test_oversized_bodies_get_a_413_and_the_connection_closes():
    with live_rig(max_body_bytes=2048) as rig:
        out = _raw(rig.router_server.port, b"POST /v1/completions HTTP/1.1\r\nHost: t\r\nContent-Length: 999999\r\n\r\n")
        assert out.startswith(b"HTTP/1.1 413 ") and b"max_body_bytes" in out and b"connection: close" in out.lower()
        chunked = (b"POST /v1/completions HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
                   + (b"400\r\n" + b"x" * 1024 + b"\r\n") * 3 + b"0\r\n\r\n")
        out = _raw(rig.router_server.port, chunked)
        assert out.startswith(b"HTTP/1.1 413 ") and b"exceeds 2048 bytes" in out
        assert rig.router.state.arrivals == 0


def test_malformed_http_gets_a_400_and_a_close():
    with live_rig() as rig:
        out = _raw(rig.router_server.port, b"POST /v1/completions HTTP/1.1\r\nHost t\x01\r\n\r\n")
        assert out.startswith(b"HTTP/1.1 400 ") and b"malformed HTTP" in out


def test_get_on_a_data_path_is_405():
    with live_rig() as rig:
        out = _raw(rig.router_server.port, b"GET /v1/completions HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        assert out.startswith(b"HTTP/1.1 405 ") and b"allow: POST" in out


def test_http_10_stream_is_not_chunked_and_ends_with_the_connection():
    with live_rig() as rig:
        body = completion(prompt_len=30, max_tokens=3, stream=True)
        out = _raw(rig.router_server.port, _post(json.dumps(body).encode(), version=b"1.0"))
        head, _, rest = out.partition(b"\r\n\r\n")
        assert b"transfer-encoding" not in head.lower()
        assert _sse_tokens(rest.decode()) == expected_tokens(body["prompt"], 3)
        assert rest.endswith(b"data: [DONE]\n\n")


def test_expect_100_continue_is_answered_before_the_body():
    with live_rig() as rig, socket.create_connection(("127.0.0.1", rig.router_server.port), timeout=30) as s:
        body = json.dumps(completion(prompt_len=30, max_tokens=2, stream=False)).encode()
        s.sendall(_post(b"", extra=b"Expect: 100-continue\r\nConnection: close\r\n").replace(
            b"Content-Length: 0", b"Content-Length: " + str(len(body)).encode()))
        assert s.recv(100).startswith(b"HTTP/1.1 100 Continue\r\n\r\n")
        s.sendall(body)
        out = b""
        while chunk := s.recv(65536):
            out += chunk
        assert out.startswith(b"HTTP/1.1 200 OK") and b'"token_ids"' in out


def test_oversized_headers_get_a_431_and_idle_keep_alive_connections_are_closed():
    with live_rig(client_keepalive_s=0.3) as rig:
        out = _raw(rig.router_server.port, b"GET /health HTTP/1.1\r\nHost: t\r\nX-Big: " + b"a" * 70_000 + b"\r\n\r\n")
        assert out.startswith(b"HTTP/1.1 431 ") and b"headers exceed" in out
        with socket.create_connection(("127.0.0.1", rig.router_server.port), timeout=30) as s:
            s.sendall(b"GET /health HTTP/1.1\r\nHost: t\r\n\r\n")
            t0 = time.monotonic()
            got = b""
            while chunk := s.recv(65536):  # the answer, then the router's close after 0.3 s idle
                got += chunk
            assert got.startswith(b"HTTP/1.1 200 ") and b"date: " in got.lower()
            assert 0.2 < time.monotonic() - t0 < 20


def test_serve_on_a_taken_port_fails_with_one_line():
    from typer.testing import CliRunner

    from arrow_rl.cli import app

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        r = CliRunner().invoke(app, ["serve", "--port", str(port), "--token", "t", "--routing", "least-loaded",
                                     "--instance", "http://127.0.0.1:9=prefill", "--instance", "http://127.0.0.1:10=decode"])
    assert r.exit_code == 2 and f"cannot listen on 127.0.0.1:{port}" in r.output
    assert "Traceback" not in r.output


def test_a_new_connection_gets_the_first_request_timeout_not_the_keep_alive():
    """Closing a connection while its client is about to send resets the request (the kernel answers
    the late bytes with RST), so a fresh connection waits ``client_first_request_s``; only between
    requests does the shorter keep-alive apply."""
    with live_rig(client_keepalive_s=0.2, client_first_request_s=1.5) as rig:
        with socket.create_connection(("127.0.0.1", rig.router_server.port), timeout=30) as s:
            time.sleep(0.6)   # past the keep-alive, inside the first-request time
            s.sendall(b"GET /health HTTP/1.1\r\nHost: t\r\n\r\n")
            assert s.recv(65536).startswith(b"HTTP/1.1 200 ")
        with socket.create_connection(("127.0.0.1", rig.router_server.port), timeout=30) as s:
            t0 = time.monotonic()
            assert s.recv(65536) == b""   # never sent a request: closed after the first-request time
            assert 1.2 < time.monotonic() - t0 < 20
