"""The viewer's guard and its bad-input answers, over a real driver whose store is down (a closed
port on 127.0.0.1): the token, the cookie, the host check, a port in use, and the JSON embedded
in a page. What it shows of a real store is tests/integration/test_view.py's."""

from __future__ import annotations

import socket

import neo4j
import pytest
from starlette.testclient import TestClient

from circuitstore.query import CircuitStore
from circuitstore.schema.errors import ConfigError
from circuitstore.view.app import create_app
from circuitstore.view.payloads import embedded
from circuitstore.view.serve import bind


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def client():  # type: ignore[no-untyped-def]
    uri = f"bolt://127.0.0.1:{closed_port()}"
    driver = neo4j.GraphDatabase.driver(
        uri, auth=("neo4j", "not-used-pw"), max_transaction_retry_time=0
    )
    app = create_app(CircuitStore(driver, where=uri), token="right-token", port=4321)
    with TestClient(app, base_url="http://127.0.0.1:4321") as c:
        yield c
    driver.close()


@pytest.mark.parametrize(
    "path",
    [
        "/",
        "/?token=wrong",
        "/prompt/x",
        "/feature/mlp0tc[1]",
        "/api/node?prompt=x&node=y",
        "/static/vendor/d3.min.js",
        "/static/view.css",
        "/nope",
    ],
)
def test_every_url_without_the_token_is_forbidden_and_shows_nothing(client, path):
    response = client.get(path)
    assert response.status_code == 403
    assert "needs its token" in response.text
    assert "d3js.org" not in response.text
    assert "payload" not in response.text
    assert "set-cookie" not in response.headers


def test_the_token_sets_a_cookie_that_later_requests_use(client):
    first = client.get("/static/view.css?token=right-token")
    assert first.status_code == 200
    cookie = first.headers["set-cookie"]
    assert cookie.startswith("circuitstore-view-4321=right-token;")
    assert "HttpOnly" in cookie
    assert "SameSite=Strict" in cookie
    assert client.get("/static/vendor/d3.min.js").status_code == 200  # the cookie now
    client.cookies.clear()
    assert client.get("/static/vendor/d3.min.js").status_code == 403


def test_another_host_name_is_refused(client):
    response = client.get("/?token=right-token", headers={"host": "evil.example:4321"})
    assert response.status_code == 400


@pytest.mark.parametrize("path", ["/", "/prompt/some-key", "/feature/mlp0tc[1]"])
def test_a_store_that_is_down_gets_a_page_that_says_so(client, path):
    response = client.get(path + "?token=right-token")
    assert response.status_code == 503
    assert "role='alert'" in response.text
    assert "Traceback" not in response.text
    assert "127.0.0.1" in response.text  # the page names the store it could not reach


def test_calls_name_a_missing_parameter(client):
    response = client.get("/api/node?token=right-token&prompt=p")
    assert response.status_code == 400
    assert response.json() == {"error": "missing parameter 'node'"}


def test_a_store_that_is_down_gets_a_json_error_from_the_calls(client):
    response = client.get("/api/node?token=right-token&prompt=p&node=embed0@1")
    assert response.status_code == 503
    assert set(response.json()) == {"error"}


def test_embedded_json_cannot_close_its_script_element():
    text = embedded({"label": "</script><script>alert(1)</script>", "x": [1.5, None]})
    assert "</" not in text
    assert "<" not in text
    assert text.startswith('{"label":"\\u003c/script>')


def test_a_port_in_use_is_one_clear_error():
    taken = bind(0)
    try:
        with pytest.raises(
            ConfigError, match=rf"^port {taken.port} on 127.0.0.1 is in use: choose another"
        ):
            bind(taken.port)
    finally:
        taken.sock.close()


@pytest.mark.parametrize("port", [-1, 65536])
def test_a_port_out_of_range_is_refused(port):
    with pytest.raises(ConfigError, match=rf"^port {port}: expected 0..65535"):
        bind(port)


def test_the_url_is_one_line_on_127_0_0_1_with_a_fresh_token():
    a, b = bind(0), bind(0)
    try:
        assert a.url.startswith(f"http://127.0.0.1:{a.port}/?token=")
        assert a.token != b.token
        assert len(a.token) >= 40
    finally:
        a.sock.close()
        b.sock.close()
