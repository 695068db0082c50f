"""A Neo4j restart in the middle of an ingest run is waited out, and the run completes with the
graph a clean run leaves. Uses its own container, published on a fixed loopback port so that
the restarted server comes back at the same address."""

from __future__ import annotations

import os
import secrets
import socket
import subprocess
import time

import pytest

from circuitstore.schema.apply import apply_schema
from circuitstore.schema.connection import Neo4jSettings, open_driver

from .helpers import ingest_cmd

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def restartable(neo4j_container):  # type: ignore[no-untyped-def]
    """A second container (the shared one must not restart under other tests)."""
    from testcontainers.community.neo4j import Neo4jContainer

    image = os.environ.get("CIRCUITSTORE_NEO4J_IMAGE", "localhost/circuitstore-neo4j:5.26.30")
    container = Neo4jContainer(image=image, password=secrets.token_urlsafe(16))
    container.ports["7687"] = ("127.0.0.1", _free_port())  # type: ignore[assignment]
    container.with_env("NEO4J_server_memory_heap_max__size", "1G")
    container.with_env("NEO4J_server_memory_pagecache_size", "256M")
    container.start()
    try:
        yield container
    finally:
        container.stop()


def _prompts(driver) -> int:  # type: ignore[no-untyped-def]
    with driver.session() as s:
        return s.run("MATCH (p:Prompt) RETURN count(p) AS c").single()["c"]


def test_restart_mid_run_is_retried(
    restartable, tiny_weights, corpus_file, tmp_path, store_snapshot, wipe
):
    settings = Neo4jSettings(
        uri=restartable.get_connection_url(), password=restartable.password, username="neo4j"
    )
    env = {
        **os.environ,
        "NEO4J_URI": settings.uri,
        "NEO4J_USERNAME": "neo4j",
        "NEO4J_PASSWORD": restartable.password,
    }

    def cmd(catalog_dir):  # type: ignore[no-untyped-def]
        # One prompt a catalog update: the restart falls between many of them.
        return ingest_cmd(tiny_weights, corpus_file, str(catalog_dir), "--batch-size", "1")

    with open_driver(settings) as driver:
        apply_schema(driver, "neo4j")
        clean_dir = tmp_path / "clean"
        clean_dir.mkdir()
        subprocess.run(cmd(clean_dir), env=env, check=True, capture_output=True)
        clean = store_snapshot(driver)
        wipe(driver)

    proc = subprocess.Popen(
        cmd(tmp_path), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    with open_driver(settings) as driver:
        while proc.poll() is None and _prompts(driver) < 4:
            time.sleep(0.05)
    assert proc.poll() is None, "the run finished before the restart"
    restartable.get_wrapped_container().restart(timeout=30)
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err

    with open_driver(settings, retry_seconds=60) as driver:
        assert store_snapshot(driver) == clean
