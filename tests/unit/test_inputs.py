"""Bounded reading of users' files and strict JSON (schema/inputs.py): every refusal is one line
naming the place, and no read grows past its bound."""

from __future__ import annotations

import gzip
import re
from pathlib import Path

import pytest

from circuitstore.ingest.config import IngestConfig
from circuitstore.query.readonly import parse_params
from circuitstore.schema.connection import Neo4jSettings, check_uri
from circuitstore.schema.errors import ConfigError, InputError, QueryError
from circuitstore.schema.inputs import (
    MalformedJSONError,
    read_document,
    strict_json,
    text_lines,
    url_port_problem,
)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[" * 5000 + "]" * 5000, "JSON nested too deeply"),
        ('{"a": ' + "1" * 5000 + "}", "an integer of 5000 digits; at most 40"),
        ('{"a": -' + "1" * 41 + "}", "an integer of 41 digits"),
        ("NaN", "NaN is not a JSON number"),
        ('{"a": Infinity}', "Infinity is not a JSON number"),
        ("[-Infinity]", "-Infinity is not a JSON number"),
        ("1e999", "the number 1e999 is beyond a 64-bit float's range"),
        ("-1e400", "the number -1e400 is beyond"),
    ],
)
def test_strict_json_refuses_what_a_store_cannot_keep(text, message):
    with pytest.raises(ValueError, match=re.escape(message)) as info:
        strict_json(text)
    assert not isinstance(info.value, MalformedJSONError)


def test_strict_json_keeps_ordinary_values():
    text = '{"a": [1, -2.5e10, "x", true, null], "b": ' + "9" * 40 + "}"
    assert strict_json(text) == {"a": [1, -2.5e10, "x", True, None], "b": int("9" * 40)}


def test_malformed_json_is_its_own_kind():
    with pytest.raises(MalformedJSONError, match=r"malformed JSON \(Expecting value at column 6\)"):
        strict_json('{"a":')


def test_text_lines_are_numbered_and_decoded(tmp_path: Path):
    path = tmp_path / "c.txt"
    path.write_bytes(b"\xef\xbb\xbfone\r\ntwo\n\nthree")
    assert list(text_lines(path)) == [(1, "one"), (2, "two"), (3, ""), (4, "three")]


def test_text_lines_bound_each_line(tmp_path: Path):
    path = tmp_path / "c.txt"
    path.write_bytes(b"ok\n" + b"x" * 101 + b"\n")
    with pytest.raises(InputError, match=r"c\.txt:2: a line longer than 100 bytes"):
        list(text_lines(path, max_line=100))
    path.write_bytes(b"x" * 100 + b"\n")  # exactly at the bound: read
    assert [n for n, _ in text_lines(path, max_line=100)] == [1]


def test_text_lines_read_gzip_and_refuse_damaged_streams(tmp_path: Path):
    lines = b"".join(b'{"layer": 1, "index": %d}\n' % i for i in range(5000))
    good = tmp_path / "good.jsonl.gz"
    good.write_bytes(gzip.compress(lines))
    assert len(list(text_lines(good, gunzip=True))) == 5000
    damaged = bytearray(good.read_bytes())
    middle = len(damaged) // 2
    damaged[middle : middle + 8] = b"\xff" * 8  # the deflate stream, mid-way
    bad = tmp_path / "bad.jsonl.gz"
    bad.write_bytes(bytes(damaged))
    with pytest.raises(InputError, match=r"bad\.jsonl\.gz: not a readable gzip file"):
        list(text_lines(bad, gunzip=True))


def test_read_document_is_bounded(tmp_path: Path):
    path = tmp_path / "doc.json"
    path.write_bytes(b"[" + b"1," * 100 + b"1]")
    with pytest.raises(InputError, match=r"doc\.json: larger than 64 bytes"):
        read_document(path, limit=64)
    assert read_document(path, limit=1000).startswith(b"[1,")


def test_device_files_stop_at_once():
    with pytest.raises(InputError, match=r"/dev/zero: binary file \(NUL byte at offset 0\)"):
        next(text_lines(Path("/dev/zero")))
    with pytest.raises(InputError, match=r"/dev/zero: larger than 1,024 bytes"):
        read_document(Path("/dev/zero"), limit=1024)


def test_env_file_is_read_with_a_bound():
    with pytest.raises(ConfigError, match=r"--env-file /dev/zero: larger than 1,048,576 bytes"):
        Neo4jSettings.load(env_file=Path("/dev/zero"))


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("bolt://127.0.0.1:37687x", "port '37687x' is not a port number (1 to 65535)"),
        ("bolt://127.0.0.1:99999", "port '99999' is not a port number (1 to 65535)"),
        ("bolt://127.0.0.1:0", "port '0' is not a port number (1 to 65535)"),
        ("bolt://[::1:7687", "an IPv6 address needs its closing ']'"),
        ("postgresql://u:secret@host:abc/db", "port 'abc' is not a port number (1 to 65535)"),
        ("bolt://[::1]:7687", None),
        ("bolt://127.0.0.1", None),
        ("sqlite:///path/to/catalog.sqlite", None),
    ],
)
def test_url_ports(url, problem):
    assert url_port_problem(url) == problem


@pytest.mark.parametrize("uri", ["bolt://127.0.0.1:37687x", "neo4j://[::1:7687"])
def test_neo4j_uri_with_a_bad_port_is_one_line(uri):
    with pytest.raises(ConfigError, match=r"^NEO4J_URI .*(port|IPv6)"):
        check_uri(uri)


def test_catalog_url_with_a_bad_port_hides_the_password():
    with pytest.raises(ConfigError) as info:
        IngestConfig(model="m", transcoders="t", prompts="p", catalog="postgresql://u:s3cret@h:x/d")
    assert "--catalog is not a database URL (port 'x'" in str(info.value)
    assert "s3cret" not in str(info.value)


@pytest.mark.parametrize(
    ("pair", "message"),
    [
        ("p=" + "[" * 50_000 + "]" * 50_000, "parameter 'p': JSON nested too deeply"),
        ("p=" + "7" * 5000, "parameter 'p': an integer of 5000 digits"),
        ("p=NaN", "parameter 'p': NaN is not a JSON number"),
    ],
)
def test_cypher_parameters_that_could_not_be_sent(pair, message):
    with pytest.raises(QueryError) as info:
        parse_params((pair,))
    assert message in str(info.value)
    assert len(str(info.value)) < 200


def test_cypher_parameters_that_are_not_json_stay_strings():
    assert parse_params(("a=8", "b=mlp8tc[3]", "c=[1, 2]", "d={")) == {
        "a": 8,
        "b": "mlp8tc[3]",
        "c": [1, 2],
        "d": "{",
    }
