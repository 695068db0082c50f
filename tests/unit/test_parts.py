"""The parts format without a server: what `PartsWriter` writes, what `scan` refuses (as a
table of bad folders), and the reductions `build` computes into the importer's CSV files."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from circuitstore.ingest.parts import format as fmt
from circuitstore.ingest.parts.build import build
from circuitstore.ingest.parts.folder import Folder
from circuitstore.ingest.parts.format import PartsError
from circuitstore.ingest.parts.scan import scan
from circuitstore.ingest.parts.writer import PartsWriter
from circuitstore.ingest.payload import PromptPayload
from circuitstore.ingest.writer import TranscoderSetNode
from circuitstore.schema.errors import ConfigError

SET = "tiny-000000000000"
INFO = TranscoderSetNode(SET, {"name": SET, "nLayers": 2}, "hash-a", {"top_examples": 2})


def fid(layer: int, index: int) -> str:
    return f"{SET}/{layer}/{index}"


def payload(key: str, activation: float, drive: float) -> PromptPayload:
    """A two-node prompt: feature 0/1 drives feature 1/2 with `drive`."""
    pid = f"{SET}/{key}"
    nodes = [
        ["Occurrence", {"id": f"{pid}/a", "localId": "a", "prompt": pid, "kind": "feature",
                        "pos": 0, "layer": 0, "feature": 1, "activation": activation}],
        ["Embedding", {"id": f"{pid}/b", "localId": "b", "prompt": pid, "kind": "embedding",
                       "pos": 0, "tokenId": 7, "token": "line\nbreak \"q\" ,"}],
    ]  # fmt: skip
    features = [{"id": fid(0, 1), "n": 2, "sum": activation * 1.5, "max": activation}]
    top = [{"id": fid(0, 1), "activation": activation, "pos": 3}]
    drives = [{"s": fid(0, 1), "t": fid(1, 2), "n": 1, "sum": drive, "sumAbs": abs(drive),
               "maxAbs": abs(drive)}]  # fmt: skip
    prompt = {"id": pid, "key": key, "text": "t", "tokens": ["<bos>", "x"], "run": "r"}
    edges: list[list[Any]] = [[1, 0, 0.25, "residual", [3, 1], [0.2, 0.05], 0.0, None]]
    return PromptPayload(pid, prompt, nodes, edges, features, drives, top)


def features() -> list[dict[str, Any]]:
    return [
        {"id": fid(layer, i), "props": {"transcoderSet": SET, "layer": layer, "index": i,
                                        "name": f"mlp{layer}tc[{i}]"}}
        for layer in (0, 1) for i in range(3)
    ]  # fmt: skip


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    writer = PartsWriter(str(tmp_path / "parts"))
    assert writer.ensure_transcoder_set(INFO, features()) is True
    for key, act, drive in (("p1", 2.0, 0.5), ("p2", 3.0, -0.25), ("p3", 2.0, 1.0)):
        assert writer.write_prompt(payload(key, act, drive)) is True
    assert writer.write_views(SET, 0, [{"id": fid(0, 1), "props": {"logitLensTokens": ["a"]}}],
                              [{"target": fid(0, 1), "sources": [[fid(0, 2), 0.5]]}])  # fmt: skip
    return tmp_path / "parts"


def test_every_kind_property_has_a_nodes_column() -> None:
    assert fmt.kind_props_without_column() == set()


def test_writing_twice_changes_nothing(folder: Path) -> None:
    before = sorted(p.stat().st_mtime_ns for p in folder.rglob("*.parquet"))
    writer = PartsWriter(str(folder))
    assert writer.ensure_transcoder_set(INFO, features()) is False
    assert writer.write_prompt(payload("p1", 2.0, 0.5)) is False
    assert writer.existing_prompts([f"{SET}/p1", f"{SET}/p9"]) == {f"{SET}/p1": "r"}
    assert writer.view_layers(SET) == {0}
    assert sorted(p.stat().st_mtime_ns for p in folder.rglob("*.parquet")) == before


def test_another_sets_or_settings_parts_are_refused(folder: Path) -> None:
    other = TranscoderSetNode(SET, INFO.props, "hash-b", {"top_examples": 2})
    with pytest.raises(ConfigError, match="other graph settings"):
        PartsWriter(str(folder)).check_transcoder_set(other)


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def test_build_reduces_the_corpus(folder: Path, tmp_path: Path) -> None:
    out = tmp_path / "import"
    out.mkdir()
    files = build(scan(str(folder)), out)
    assert files.counts == {
        "TranscoderSet": 1, "Feature": 6, "Prompt": 3, "GraphNode": 6,
        "ATTR": 3, "DRIVES": 1, "TOP_EXAMPLE": 2, "VIRTUAL_WEIGHT": 1,
    }  # fmt: skip
    (drives,) = read_csv(out / "DRIVES.csv")
    assert drives["n:long"] == "3"
    assert float(drives["sum:double"]) == pytest.approx(1.25, rel=1e-12)
    assert drives["maxAbs:double"] == "1.0"
    # top_examples 2 of three prompts: 3.0, then the tie at 2.0 to the lower prompt id.
    top = sorted(
        (r[":END_ID(P)"], r["activation:double"]) for r in read_csv(out / "TOP_EXAMPLE.csv")
    )
    assert top == [(f"{SET}/p1", "2.0"), (f"{SET}/p2", "3.0")]
    feature = {r["id:ID(F)"]: r for r in read_csv(out / "Feature.csv")}[fid(0, 1)]
    assert (feature["nActive:long"], feature["nPrompts:long"]) == ("6", "3")
    assert (feature["topCount:long"], feature["topMin:double"]) == ("2", "2.0")
    assert feature["logitLensTokens:string[]"] == "a"
    nodes = {r["id:ID(G)"]: r for r in read_csv(out / "GraphNode.csv")}
    assert nodes[f"{SET}/p1/b"]["token:string"] == 'line\nbreak "q" ,'
    assert nodes[f"{SET}/p1/a"][":LABEL"] == f"GraphNode{files.delimiter}Occurrence"
    (edge, *_) = read_csv(out / "ATTR.csv")
    assert edge["heads:long[]"] == f"3{files.delimiter}1"
    assert edge["residual:double"] == ""  # absent, as the store leaves it


def restamp(path: Path, **changes: bytes) -> None:
    table = pq.read_table(path)
    meta = dict(table.schema.metadata or {})
    meta.update({k.encode(): v for k, v in changes.items()})
    pq.write_table(table.replace_schema_metadata(meta), path)


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:-40])


def foreign(path: Path) -> None:
    pq.write_table(pa.table({"x": [1]}), path)


def first(folder: Path, table: str) -> Path:
    return sorted((folder / table).glob("*.parquet"))[0]


BAD_FOLDERS = [
    ("truncated", lambda f: truncate(first(f, "edges")), "not a readable Parquet file"),
    ("foreign", lambda f: foreign(first(f, "nodes")), "not a circuitstore part"),
    ("not text", lambda f: first(f, "drives").write_text("hello"), "not a readable Parquet"),
    ("version", lambda f: restamp(first(f, "prompts"), **{"circuitstore.parts": b"99"}),
     "format version 99"),
    ("two sets", lambda f: restamp(first(f, "edges"), **{"circuitstore.transcoderSet": b"x"}),
     "parts of two sets or settings"),
    ("two settings", lambda f: restamp(first(f, "drives"), **{"circuitstore.graphConfigHash":
                                                              b"h"}), "graph settings hash h"),
    ("misplaced", lambda f: first(f, "edges").replace(first(f, "nodes")),
     "a part of table 'edges' in the folder of table 'nodes'"),
    ("no set", lambda f: (f / fmt.SET_FILE).unlink(), "not a parts folder"),
    ("committed, incomplete", lambda f: first(f, "occurrences").unlink(), "missing"),
]  # fmt: skip


@pytest.mark.parametrize(("case", "spoil", "message"), BAD_FOLDERS, ids=[c[0] for c in BAD_FOLDERS])
def test_a_bad_folder_is_named_before_anything_loads(folder, case, spoil, message) -> None:
    spoil(folder)
    with pytest.raises(PartsError, match=message) as info:
        scan(str(folder))
    assert "\n" not in str(info.value)
    assert str(folder) in str(info.value)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("nosuch://bucket/parts", "pyarrow cannot open nosuch://"),
        ("/dev/null/parts", "cannot write parts there"),
    ],
)
def test_a_place_parts_cannot_go_is_one_line(url: str, message: str) -> None:
    with pytest.raises(PartsError, match=message) as info:
        PartsWriter(url)
    assert "\n" not in str(info.value)


def test_temporary_leftovers_are_not_parts(folder: Path) -> None:
    (folder / "prompts" / ".tmp-0123-x.parquet").write_bytes(b"half a file")
    assert len(Folder.open(str(folder)).names("prompts")) == 3
    assert scan(str(folder)).n_prompts == 3


def test_the_importer_argument_file_names_the_mounted_files(folder: Path, tmp_path: Path) -> None:
    from circuitstore.server.admin import write_args_file

    out = tmp_path / "import"
    out.mkdir()
    files = build(scan(str(folder)), out)
    args = write_args_file(files, "/import").read_text().splitlines()
    assert args[:4] == ["database", "import", "full", "neo4j"]
    assert "--nodes=Feature=/import/Feature.csv" in args
    assert "--nodes=/import/GraphNode.csv" in args  # labels from its :LABEL column
    assert "--relationships=DRIVES=/import/DRIVES.csv" in args
    assert f"--array-delimiter=U+{ord(files.delimiter):04X}" in args
    assert args[-1] == "--overwrite-destination=true"
    assert not any(str(out) in a for a in args)


def test_a_load_the_disk_cannot_hold_is_refused_before_anything_starts(
    folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from circuitstore.server import bulk
    from circuitstore.server.config import ServerSettings

    monkeypatch.setattr(bulk, "SPACE_FACTOR", 10**12)  # a petabyte per byte of parts
    home = tmp_path / "home"
    job = bulk.BulkLoad(str(folder), ServerSettings(home, 7687, 7474), "unused-password")
    with pytest.raises(ConfigError, match="GiB free where the server home") as info:
        job.run()
    assert "\n" not in str(info.value)
    assert not home.exists()  # no server assembled, nothing started
