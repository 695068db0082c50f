"""Corpus reading: formats, skipped lines, and one-line errors naming file and line."""

from __future__ import annotations

import json

import pytest

from circuitstore.errors import InputError
from circuitstore.ingest.corpus import parse_shard, read_corpus, shard_of, text_key


def _write(tmp_path, name, data):
    path = tmp_path / name
    path.write_bytes(data if isinstance(data, bytes) else data.encode())
    return path


def test_text_skips_and_counts_blank_and_repeated_lines(tmp_path):
    path = _write(tmp_path, "p.txt", "one\n\n  \ntwo\none\n")
    corpus = read_corpus(str(path))
    assert [p.text for p in corpus.prompts] == ["one", "two"]
    assert [p.line for p in corpus.prompts] == [1, 4]
    assert corpus.blank_lines == 2
    assert corpus.repeated_lines == 1
    assert corpus.prompts[0].key == text_key("one")


def test_jsonl_keeps_ids_and_extra_fields(tmp_path):
    rows = [
        {"id": "a", "text": "x y", "topic": "ioi", "n": 3, "nested": {"no": 1}},
        {"id": 7, "text": "z"},
    ]
    path = _write(tmp_path, "p.jsonl", "\n".join(json.dumps(r) for r in rows))
    corpus = read_corpus(str(path))
    assert [p.key for p in corpus.prompts] == ["a", "7"]
    assert corpus.prompts[0].extra == {"topic": "ioi", "n": 3}


@pytest.mark.parametrize(
    ("name", "data", "message"),
    [
        ("empty.txt", "", "empty.txt: no prompts"),
        ("blank.txt", "\n \n", "blank.txt: no prompts"),
        ("bin.txt", b"ab\x00cd", "bin.txt: binary file (NUL byte at offset 2)"),
        ("bad.txt", b"fine\nbad \xff here\n", "bad.txt:2: invalid UTF-8 at byte 4"),
        (
            "bad.jsonl",
            '{"id": "a", "text": "x"}\n{"id": "b" "text"}\n',
            "bad.jsonl:2: malformed JSON",
        ),
        ("notext.jsonl", '{"id": "a"}\n', 'notext.jsonl:1: "text" must be a non-empty string'),
        ("list.jsonl", "[1, 2]\n", "list.jsonl:1: expected an object"),
        (
            "dup.jsonl",
            '{"id": "a", "text": "x"}\n\n{"id": "a", "text": "y"}\n',
            "dup.jsonl:3: duplicate prompt id 'a' (first on line 1)",
        ),
    ],
)
def test_bad_input_is_one_line_naming_file_and_line(tmp_path, name, data, message):
    path = _write(tmp_path, name, data)
    with pytest.raises(InputError) as info:
        read_corpus(str(path))
    text = str(info.value)
    assert message in text
    assert "\n" not in text


def test_missing_file(tmp_path):
    with pytest.raises(InputError, match=r"nope\.txt: no such file"):
        read_corpus(str(tmp_path / "nope.txt"))


def test_shards_partition_the_corpus(tmp_path):
    path = _write(tmp_path, "p.txt", "\n".join(f"prompt {i}" for i in range(200)))
    corpus = read_corpus(str(path))
    shards = [corpus.shard(i, 3) for i in range(3)]
    keys = [p.key for s in shards for p in s.prompts]
    assert sorted(keys) == sorted(p.key for p in corpus.prompts)
    assert all(len(s.prompts) > 40 for s in shards)
    assert shard_of("abc", 5) == shard_of("abc", 5)


@pytest.mark.parametrize("spec", ["3/3", "x/2", "1", "-1/2", "1/0"])
def test_bad_shard_spec(spec):
    with pytest.raises(InputError, match="expected I/N"):
        parse_shard(spec)
