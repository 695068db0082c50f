"""Corpus reading: formats, skipped lines, and one-line errors naming file and line."""

from __future__ import annotations

import json

import pytest

from circuitstore.ingest.corpus import parse_shard, read_corpus, shard_of, text_key
from circuitstore.schema.errors import InputError
from circuitstore.schema.inputs import MAX_LINE_BYTES


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
        {"id": "a", "text": "x y", "topic": "ioi", "n": 3, "none": None, "xs": [1, 2.5]},
        {"id": 7, "text": "z", "big": 2**63 - 1, "flags": [True, False], "empty": []},
    ]
    path = _write(tmp_path, "p.jsonl", "\n".join(json.dumps(r) for r in rows))
    corpus = read_corpus(str(path))
    assert [p.key for p in corpus.prompts] == ["a", "7"]
    # A null is no property at all (as Neo4j treats it); integers and floats may share a list.
    assert corpus.prompts[0].extra == {"topic": "ioi", "n": 3, "xs": [1, 2.5]}
    assert corpus.prompts[1].extra == {"big": 2**63 - 1, "flags": [True, False], "empty": []}


def test_a_utf8_byte_order_mark_is_not_text(tmp_path):
    text = _write(tmp_path, "bom.txt", b"\xef\xbb\xbffirst\nsecond\n")
    assert [p.text for p in read_corpus(str(text)).prompts] == ["first", "second"]
    jsonl = _write(tmp_path, "bom.jsonl", b'\xef\xbb\xbf{"id": "a", "text": "x"}\n')
    assert [p.key for p in read_corpus(str(jsonl)).prompts] == ["a"]


def test_a_corpus_digest_follows_its_contents(tmp_path):
    for sub in "abc":
        (tmp_path / sub).mkdir()
    a = read_corpus(str(_write(tmp_path / "a", "p.txt", "one\ntwo\n")))
    b = read_corpus(str(_write(tmp_path / "b", "p.txt", "one\nthree\n")))
    again = read_corpus(str(_write(tmp_path / "c", "p.txt", "one\ntwo\n")))
    assert a.digest() != b.digest()
    assert a.digest() == again.digest()


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
        (
            "emptyname.jsonl",
            '{"id": "a", "text": "x", "": 1}\n',
            "emptyname.jsonl:1: field '' has an empty name",
        ),
        (
            "bigint.jsonl",
            '{"id": "a", "text": "x"}\n{"id": "b", "text": "y", "n": 123456789012345678901234567890}\n',
            "bigint.jsonl:2: field 'n' holds the integer 123456789012345678901234567890, outside 64 bits",
        ),
        (
            "biglist.jsonl",
            '{"id": "a", "text": "x", "n": [1, -9223372036854775809]}\n',
            "biglist.jsonl:1: field 'n' holds the integer -9223372036854775809, outside 64 bits",
        ),
        (
            "nested.jsonl",
            '{"id": "a", "text": "x", "meta": {"k": 1}}\n',
            "nested.jsonl:1: field 'meta' holds an object as its value",
        ),
        (
            "nestedlist.jsonl",
            '{"id": "a", "text": "x", "m": [[1]]}\n',
            "nestedlist.jsonl:1: field 'm' holds a nested list in a list",
        ),
        (
            "nullinlist.jsonl",
            '{"id": "a", "text": "x", "m": ["a", null]}\n',
            "nullinlist.jsonl:1: field 'm' holds a null in a list",
        ),
        (
            "mixed.jsonl",
            '{"id": "a", "text": "x", "m": ["a", 1]}\n',
            "mixed.jsonl:1: field 'm' is a list of mixed kinds (number, str)",
        ),
        (
            "deep.jsonl",
            '{"id": "a", "text": "x", "m": ' + "[" * 5000 + "]" * 5000 + "}\n",
            "deep.jsonl:1: JSON nested too deeply",
        ),
        (
            "digits.jsonl",
            '{"id": "a", "text": "x", "n": ' + "7" * 5000 + "}\n",
            "digits.jsonl:1: an integer of 5000 digits; at most 40",
        ),
        (
            "nan.jsonl",
            '{"id": "a", "text": "x", "n": NaN}\n',
            "nan.jsonl:1: NaN is not a JSON number",
        ),
        (
            "inf.jsonl",
            '{"id": "a", "text": "x", "n": [1, -Infinity]}\n',
            "inf.jsonl:1: -Infinity is not a JSON number",
        ),
        (
            "huge.jsonl",
            '{"id": "a", "text": "x", "n": 1e999}\n',
            "huge.jsonl:1: the number 1e999 is beyond a 64-bit float's range",
        ),
        (
            "longline.txt",
            b"fine\n" + b"x" * (MAX_LINE_BYTES + 1) + b"\n",
            "longline.txt:2: a line longer than 1,048,576 bytes",
        ),
        ("endless.txt", b"x" * (MAX_LINE_BYTES + 5), "endless.txt:1: a line longer than"),
    ],
)
def test_bad_input_is_one_line_naming_file_and_line(tmp_path, name, data, message):
    path = _write(tmp_path, name, data)
    with pytest.raises(InputError) as info:
        read_corpus(str(path))
    text = str(info.value)
    assert message in text
    assert "\n" not in text


def test_dev_zero_stops_at_once():
    """A file that never ends, and never ends a line, is refused after one bounded read."""
    with pytest.raises(InputError, match=r"/dev/zero: binary file \(NUL byte at offset 0\)"):
        read_corpus("/dev/zero")


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
