"""The shared Neo4j for integration tests: one testcontainers `Neo4jContainer` per test session.

Where a Docker engine answers, the official image works; here (no Docker engine) Podman's
Docker-compatible socket serves the image that `docker/build-image.sh` builds locally. Set
`CIRCUITSTORE_NEO4J_IMAGE` to choose another image. In CI (`CI` set) a missing container runtime
fails the run instead of skipping the integration tier.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator

import pytest

from circuitstore.server.config import DEMO_HEAP, DEMO_PAGECACHE

DEFAULT_IMAGE = "localhost/circuitstore-neo4j:5.26.30"


def _runtime_problem() -> str | None:
    """Why no container runtime can be used, or None when one answers."""
    try:
        import docker

        docker.from_env().ping()
    except Exception as exc:  # any failure means the same to us: no runtime
        where = os.environ.get("DOCKER_HOST", "the default Docker socket")
        return (
            f"no container runtime answers at {where} ({type(exc).__name__}); run "
            "`bash docker/setup-podman.sh` and export the variables it prints"
        )
    return None


def _start_container(image: str, password: str, **settings: str):  # type: ignore[no-untyped-def]
    from testcontainers.community.neo4j import Neo4jContainer

    container = Neo4jContainer(image=image, password=password)
    for name, value in settings.items():  # more NEO4J_* settings, as the official image maps them
        container.with_env(name, value)
    # Publish Bolt on loopback only (docker-py's (host ip, host port) form; None picks a free
    # port). The memory is `circuitstore demo`'s, so that what the tests write fits the server a
    # user gets from the README (tests/integration/test_write_memory.py writes GPT-2-scale rows).
    container.ports["7687"] = ("127.0.0.1", None)  # type: ignore[assignment]
    for setting, value in memory_settings(DEMO_HEAP, DEMO_PAGECACHE).items():
        container.with_env(setting, value)
    return container.start()


def memory_settings(heap: str, pagecache: str) -> dict[str, str]:
    """The official image's variables for a server's heap and page cache."""
    return {
        "NEO4J_server_memory_heap_max__size": heap,
        "NEO4J_server_memory_heap_initial__size": heap,
        "NEO4J_server_memory_pagecache_size": pagecache,
    }


@pytest.fixture(scope="session")
def neo4j_container() -> Iterator[object]:
    problem = _runtime_problem()
    if problem:
        if os.environ.get("CI"):
            pytest.fail(f"integration tier cannot run: {problem}", pytrace=False)
        pytest.skip(problem)
    image = os.environ.get("CIRCUITSTORE_NEO4J_IMAGE", DEFAULT_IMAGE)
    container = _start_container(image, password=secrets.token_urlsafe(16))
    try:
        yield container
    finally:
        container.stop()


@pytest.fixture
def start_neo4j(neo4j_container):  # type: ignore[no-untyped-def]
    """Starts another server with more NEO4J_* settings (`start_neo4j(NEO4J_x="...")`) and
    returns its connection settings; each is stopped when the test ends."""
    from circuitstore.schema.connection import Neo4jSettings

    started = []

    def start(**settings: str) -> Neo4jSettings:
        image = os.environ.get("CIRCUITSTORE_NEO4J_IMAGE", DEFAULT_IMAGE)
        container = _start_container(image, secrets.token_urlsafe(16), **settings)
        started.append(container)
        return Neo4jSettings(
            uri=container.get_connection_url(),
            username=container.username,
            password=container.password,
        )

    yield start
    for container in started:
        container.stop()


@pytest.fixture(scope="session")
def neo4j_settings(neo4j_container):  # type: ignore[no-untyped-def]
    from circuitstore.schema.connection import Neo4jSettings

    return Neo4jSettings(
        uri=neo4j_container.get_connection_url(),
        username=neo4j_container.username,
        password=neo4j_container.password,
    )


@pytest.fixture(scope="session")
def driver(neo4j_settings):  # type: ignore[no-untyped-def]
    from circuitstore.schema.connection import open_driver

    with open_driver(neo4j_settings) as drv:
        yield drv


@pytest.fixture
def empty_store(driver, neo4j_settings):  # type: ignore[no-untyped-def]
    """A database with no data and none of our constraints or indexes."""
    from circuitstore.schema.ddl import SCHEMA_NAMES

    with driver.session(database=neo4j_settings.database) as session:
        session.run("MATCH (n) CALL (n) { DETACH DELETE n } IN TRANSACTIONS").consume()
        for name in SCHEMA_NAMES:
            session.run(f"DROP CONSTRAINT {name} IF EXISTS").consume()
            session.run(f"DROP INDEX {name} IF EXISTS").consume()
    return driver


@pytest.fixture
def neo4j_env(neo4j_settings, monkeypatch):  # type: ignore[no-untyped-def]
    """The container's settings as NEO4J_* variables, for CLI tests."""
    monkeypatch.setenv("NEO4J_URI", neo4j_settings.uri)
    monkeypatch.setenv("NEO4J_USERNAME", neo4j_settings.username)
    monkeypatch.setenv("NEO4J_PASSWORD", neo4j_settings.password.get_secret_value())
    return neo4j_settings


def pytest_collection_modifyitems(config, items):  # type: ignore[no-untyped-def]
    """Everything under tests/integration is in the integration tier."""
    for item in items:
        if "tests/integration/" in str(item.path).replace(os.sep, "/"):
            item.add_marker(pytest.mark.integration)
