"""Reading Neuronpedia's explanation exports without a database: the published JSON Lines
(gzipped or not) and the JSON array of its export API, written here with the export's own field
names; every malformed entry is one error naming the file and line."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from circuitstore.query.labels import check_rows, feature_rows, read_labels
from circuitstore.schema.errors import InputError


def explanation(layer: int, index: int, description: str, **extra) -> dict:
    """One line of `v1/gpt2-small/<layer>-tres-dc/explanations/batch-<n>.jsonl.gz`, with every
    column Neuronpedia's export writes (export-data.py: export_explanations)."""
    return {
        "id": f"clx{layer:02d}{index:06d}",
        "modelId": "gpt2-small",
        "layer": f"{layer}-tres-dc",
        "index": str(index),
        "authorId": "clkht01d40000jv08hvalcvly",
        "description": description,
        "embedding": None,
        "typeName": "oai_token-act-pair",
        "explanationModelName": "gpt-4o-mini",
        "umap_x": 0.0,
        "umap_y": 0.0,
        "umap_cluster": 0,
        "umap_log_feature_sparsity": 0.0,
        **extra,
    }


def write_jsonl(path: Path, rows: list, gz: bool = False) -> Path:
    text = "".join(json.dumps(r) + "\n" for r in rows)
    if gz:
        path.write_bytes(gzip.compress(text.encode()))
    else:
        path.write_text(text)
    return path


def test_reads_the_published_jsonl_gz(tmp_path):
    rows = [explanation(0, 3, " names of people"), explanation(1, 12, "years", scoreV1=0.4)]
    path = write_jsonl(tmp_path / "batch-0.jsonl.gz", rows, gz=True)
    got, blank = read_labels(path)
    assert blank == 0
    assert [(r.layer, r.index, r.description) for r in got] == [
        (0, 3, "names of people"),
        (1, 12, "years"),
    ]
    first = got[0]
    assert first.source_set == "tres-dc"
    assert first.model_id == "gpt2-small"
    assert first.explainer == "gpt-4o-mini"
    assert first.type_name == "oai_token-act-pair"
    assert first.label_id == "clx00000003"
    assert first.source == "neuronpedia:gpt2-small/0-tres-dc"
    assert first.score is None
    assert got[1].score == 0.4
    assert first.where == f"{path} line 1"


def test_reads_the_export_apis_json_array(tmp_path):
    path = tmp_path / "export.json"
    path.write_text(json.dumps([explanation(2, 5, "a"), explanation(2, 6, "b")], indent=1))
    got, _ = read_labels(path)
    assert [(r.index, r.where) for r in got] == [(5, f"{path} entry 1"), (6, f"{path} entry 2")]


def test_several_explanations_of_a_feature(tmp_path):
    rows = [
        explanation(0, 3, "first"),
        explanation(0, 3, "best", score=0.9),
        explanation(0, 3, "worse", score=0.1),
        explanation(0, 4, "   "),  # blank: skipped, counted
    ]
    got, blank = read_labels(write_jsonl(tmp_path / "e.jsonl", rows))
    assert blank == 1
    (write,) = feature_rows(got, "ts")
    assert write["id"] == "ts/0/3"
    assert write["label"] == "best"
    assert write["labels"] == ["best", "first", "worse"]
    assert write["score"] == 0.9


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("{not json", r"line 2: not valid JSON"),
        ("[1, 2]", r"line 2: expected a JSON object, found list"),
        (json.dumps({"layer": "0-tres-dc", "index": "1"}), r"line 2: no 'description' field"),
        (json.dumps(explanation(0, 1, "x") | {"index": "1a"}), r"line 2: index '1a'"),
        (json.dumps(explanation(0, 1, "x") | {"layer": "res-jb"}), r"line 2: layer 'res-jb'"),
        (json.dumps(explanation(0, 1, "x") | {"description": 5}), r"'description' must be"),
        (json.dumps(explanation(0, 1, "x") | {"scoreV1": "high"}), r"'scoreV1' must be a number"),
        ('{"layer": "0-tres-dc", "index": "1", "description": "\\ud800"}', r"lone surrogate"),
    ],
)
def test_a_bad_line_is_named(tmp_path, line, message):
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps(explanation(0, 0, "ok")) + "\n" + line + "\n")
    with pytest.raises(InputError, match=message) as info:
        read_labels(path)
    assert str(info.value).startswith(f"{path} line 2")
    assert "\n" not in str(info.value)


def test_other_source_set_is_refused(tmp_path):
    path = write_jsonl(tmp_path / "e.jsonl", [explanation(0, 1, "x")])
    with pytest.raises(
        InputError, match=r"line 1: source '0-tres-dc' is of source set 'tres-dc', not 'res-jb'"
    ):
        read_labels(path, "res-jb")
    got, _ = read_labels(path, "tres-dc")
    assert got[0].source_set == "tres-dc"


def test_not_gzip_not_utf8(tmp_path):
    path = tmp_path / "b.jsonl.gz"
    path.write_bytes(b"\x1f\x8bnot really")
    with pytest.raises(InputError, match="not a readable gzip file"):
        read_labels(path)
    path.write_bytes(b'{"a": 1}\n\xff\xfe\n')
    with pytest.raises(InputError, match=r"line 2: not UTF-8 text"):
        read_labels(path)
    with pytest.raises(InputError, match=r"cannot read"):
        read_labels(tmp_path / "missing.jsonl")


def test_ranges_of_the_transcoder_set(tmp_path):
    rows, _ = read_labels(
        write_jsonl(
            tmp_path / "e.jsonl",
            [explanation(0, 1, "x"), explanation(1, 63, "y"), explanation(2, 0, "z")],
        )
    )
    with pytest.raises(
        InputError, match=r"line 3: layer 2 is out of range; transcoder set ts has layers 0\.\.1"
    ):
        check_rows(rows, 2, 64, "ts")
    with pytest.raises(InputError, match=r"line 2: index 63 is out of range; .* features 0\.\.31"):
        check_rows(rows[:2], 2, 32, "ts")
    mixed = (
        rows[:1]
        + read_labels(
            write_jsonl(tmp_path / "m.jsonl", [explanation(0, 2, "q") | {"layer": "0-res-jb"}])
        )[0]
    )
    with pytest.raises(InputError, match="import one source set at a time"):
        check_rows(mixed, 2, 64, "ts")
