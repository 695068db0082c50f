"""The SQL run catalog on SQLite files (no server needed)."""

from __future__ import annotations

import pytest

from circuitstore.ingest.catalog import DONE, PENDING, Catalog, default_url
from circuitstore.schema.errors import CatalogError, InputError


@pytest.fixture
def catalog(tmp_path):
    return Catalog.open(default_url(tmp_path / "runs.sqlite"))


def test_new_run_then_resume_with_same_config(catalog):
    first = catalog.open_run("r", {"a": 1}, "h1", {"code": "0.1"})
    again = catalog.open_run("r", {"a": 1}, "h1", {"code": "0.1"})
    assert not first.resumed
    assert again.resumed
    assert again.config == {"a": 1}


def test_changed_config_is_refused_and_names_the_change(catalog):
    catalog.open_run("r", {"a": 1, "b": 2}, "h1", {})
    with pytest.raises(
        InputError, match=r"run 'r' exists with a different configuration \(changed: b\)"
    ):
        catalog.open_run("r", {"a": 1, "b": 3}, "h2", {})


def test_register_is_idempotent_and_marks_count(catalog):
    catalog.open_run("r", {}, "h", {})
    catalog.register("r", [("p1", 1), ("p2", 2)])
    catalog.register("r", [("p1", 1), ("p2", 2), ("p3", 3)])
    assert catalog.counts("r") == {PENDING: 3}
    catalog.mark("r", [{"key": "p1", "state": DONE, "n_tokens": 5, "n_edges": 9}])
    assert catalog.counts("r") == {PENDING: 2, DONE: 1}
    assert catalog.keys_in_state("r", PENDING) == {"p2", "p3"}


def test_state_survives_reopening(tmp_path):
    url = default_url(tmp_path / "runs.sqlite")
    first = Catalog.open(url)
    first.open_run("r", {}, "h", {})
    first.register("r", [("p1", 1)])
    first.mark("r", [{"key": "p1", "state": DONE}])
    assert Catalog.open(url).keys_in_state("r", DONE) == {"p1"}


def test_unwritable_catalog_is_one_line(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    with pytest.raises(CatalogError) as info:
        Catalog.open(default_url(blocker / "runs.sqlite"))
    assert "cannot open" in str(info.value)
    assert "\n" not in str(info.value)


def test_password_in_url_is_never_shown():
    with pytest.raises(CatalogError) as info:
        Catalog.open("postgresql+nosuchdriver://user:s3cret-pw@127.0.0.1:1/db")
    assert "s3cret-pw" not in str(info.value)


def test_recorded_config_never_holds_the_catalog_password():
    from circuitstore.ingest.config import IngestConfig

    cfg = IngestConfig.from_flat(
        model="m",
        transcoders="t",
        prompts="p.txt",
        catalog="postgresql://user:s3cret-pw@127.0.0.1/runs",
    )
    assert "s3cret-pw" not in str(cfg.public_dict())
    assert cfg.public_dict()["catalog"] == "postgresql://user:***@127.0.0.1/runs"


def _open_and_register(url: str, worker: int) -> int:
    catalog = Catalog.open(url)
    catalog.open_run("r", {}, "h", {})
    catalog.register("r", [(f"w{worker}", worker)])
    return worker


def test_workers_opening_a_new_catalog_together_all_succeed(tmp_path):
    """Shard workers start at the same moment and race to create the tables."""
    from concurrent.futures import ProcessPoolExecutor

    url = default_url(tmp_path / "new.sqlite")
    with ProcessPoolExecutor(max_workers=4) as pool:
        done = list(pool.map(_open_and_register, [url] * 8, range(8)))
    assert done == list(range(8))
    assert Catalog.open(url).counts("r") == {PENDING: 8}
