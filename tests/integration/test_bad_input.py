"""Bad input, tried as a careless or hostile user would: every case ends in one line naming the
file, line, option or value at fault, a non-zero exit status, no traceback, and a store left
exactly as it was. The cases run the real CLI in-process against the test Neo4j, filled by the
real ingest job; weights and corpora are real files in the real formats."""

from __future__ import annotations

import importlib.util
import os
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import load_file, save_file

from circuitstore.cli import cli

from .helpers import fill

pytestmark = pytest.mark.slow


class Payload:
    """Pickles as a call to os.system that would create the case's marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (os.system, (f"touch {self.marker}",))


@dataclass(frozen=True)
class Case:
    """`args` and `env` values may hold {placeholders} filled from the prepared files."""

    id: str
    args: tuple[str, ...]
    code: int
    expect: str
    env: dict[str, str | None] = field(default_factory=dict)
    prepare: Callable[[Path, dict[str, str]], None] | None = None
    secret: str | None = None  # must appear nowhere in the output


def _copy(src: Path, dst: Path) -> Path:
    dst.mkdir(parents=True)
    for path in src.iterdir():
        (dst / path.name).write_bytes(path.read_bytes())
    return dst


def _crafted_transcoders(target: str) -> Callable[[Path, dict[str, str]], None]:
    def prepare(d: Path, p: dict[str, str]) -> None:
        folder = _copy(Path(p["tcs"]), d / "evil-tc")
        layer0 = next(folder.glob("*blocks.0.ln2*[0-9].pt"))
        path = layer0 if target == "layer" else next(folder.glob("*blocks.0*sparsity.pt"))
        torch.save({"cfg": Payload(d / "MARKER"), "state_dict": {}}, path)
        p["tcs"] = str(folder)

    return prepare


def _edited_transcoder(edit: Callable[[Path], None]) -> Callable[[Path, dict[str, str]], None]:
    def prepare(d: Path, p: dict[str, str]) -> None:
        folder = _copy(Path(p["tcs"]), d / "tc")
        edit(folder)
        p["tcs"] = str(folder)

    return prepare


def _nan_in_w_enc(folder: Path) -> None:
    from circuitstore.ingest.transcoder.files import read_published

    path = next(folder.glob("*blocks.1.ln2*[0-9].pt"))
    raw = read_published(path)
    tensors = dict(raw.tensors)
    tensors["W_enc"] = tensors["W_enc"].clone()
    tensors["W_enc"][0, 0] = float("nan")
    _rewrite(path, raw.cfg, tensors)


def _narrow_layer(folder: Path) -> None:
    """Layer 1's transcoder reads 16 dimensions; the model has 32."""
    from circuitstore.ingest.synthetic import random_transcoders, save_transcoders

    for path in folder.glob("*blocks.1.*"):
        path.unlink()
    narrow = random_transcoders(2, 16, 64, seed=9)
    written = save_transcoders(narrow, folder / "narrow")
    for path in (folder / "narrow").iterdir():
        if "blocks.1." in path.name:
            path.rename(folder / path.name)
    assert written


def _drop_layer(folder: Path) -> None:
    for path in folder.glob("*blocks.1.*"):
        path.unlink()


def _rewrite(path: Path, cfg: dict[str, object], tensors: dict[str, torch.Tensor]) -> None:
    from circuitstore.ingest.transcoder import Transcoder, save_published

    names = ("W_enc", "b_enc", "W_dec", "b_dec", "b_dec_out")
    tc = Transcoder(
        layer=int(str(cfg["hook_point_layer"])),
        hook_point=str(cfg["hook_point"]),
        source=path.name,
        **{n: tensors[n] for n in names},
    )
    path.unlink()
    save_published(tc, path.parent, str(cfg["model_name"]))


def _nan_model(d: Path, p: dict[str, str]) -> None:
    folder = _copy(Path(p["model"]), d / Path(p["model"]).name)
    weights = load_file(folder / "model.safetensors")
    key = next(k for k in weights if "mlp.c_fc.weight" in k)
    weights[key][0, 0] = float("nan")
    save_file(weights, folder / "model.safetensors", metadata={"format": "pt"})
    p["model"] = str(folder)


def _file(name: str, data: bytes) -> Callable[[Path, dict[str, str]], None]:
    def prepare(d: Path, p: dict[str, str]) -> None:
        (d / name).write_bytes(data)
        p["file"] = str(d / name)

    return prepare


def _scaled_model(factor: float) -> Callable[[Path, dict[str, str]], None]:
    """The model with every MLP weight multiplied: finite, but its activations overflow."""

    def prepare(d: Path, p: dict[str, str]) -> None:
        folder = _copy(Path(p["model"]), d / "huge-model")
        weights = load_file(folder / "model.safetensors")
        for key in weights:
            if ".mlp." in key and key.endswith("weight"):
                weights[key] = weights[key] * factor
        save_file(weights, folder / "model.safetensors", metadata={"format": "pt"})
        p["model"] = str(folder)

    return prepare


def _huge_w_enc(folder: Path) -> None:
    from circuitstore.ingest.transcoder.files import read_published

    path = next(folder.glob("*blocks.1.ln2*[0-9].pt"))
    raw = read_published(path)
    _rewrite(path, raw.cfg, {**raw.tensors, "W_enc": raw.tensors["W_enc"] * 1e30})


def _bare_pickle(folder: Path) -> None:
    """Layer 0 as a bare pickle stream (protocol 4), not a file torch.save wrote."""
    import pickle

    path = next(folder.glob("*blocks.0.ln2*[0-9].pt"))
    path.write_bytes(pickle.dumps({"cfg": {}, "state_dict": {}}, protocol=4))


def _damaged_gzip(d: Path, p: dict[str, str]) -> None:
    import gzip

    lines = b"".join(
        b'{"layer": "1-x", "index": "%d", "description": "d"}\n' % i for i in range(4000)
    )
    data = bytearray(gzip.compress(lines))
    data[len(data) // 2 : len(data) // 2 + 8] = b"\xff" * 8
    (d / "labels.jsonl.gz").write_bytes(bytes(data))
    p["file"] = str(d / "labels.jsonl.gz")


def _home_below_a_file(d: Path, p: dict[str, str]) -> None:
    (d / "plain").write_text("not a folder")
    p["home"] = str(d / "plain" / "home")


def _missing_driver() -> str:
    """A database URL whose Python driver is not installed here."""
    for module, url in (
        ("psycopg2", "postgresql://catalog:s3cret-pw@127.0.0.1:1/circuitstore"),
        ("MySQLdb", "mysql://catalog:s3cret-pw@127.0.0.1:1/circuitstore"),
    ):
        if importlib.util.find_spec(module) is None:
            return url
    raise AssertionError("every candidate driver is installed")


def _parts_file(meta: dict[bytes, bytes] | None) -> Callable[[Path, dict[str, str]], None]:
    """A parts folder whose set file carries `meta` (None: cut short)."""

    def prepare(d: Path, p: dict[str, str]) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        path = d / "transcoder_set.parquet"
        pq.write_table(pa.table({"id": ["s"]}).replace_schema_metadata(meta or {}), path)
        if meta is None:
            path.write_bytes(path.read_bytes()[:-12])

    return prepare


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


W = ("--model", "{model}", "--transcoders", "{tcs}")
INGEST = ("ingest", *W, "--prompts", "{corpus}", "--no-progress")
CORPUS = ("ingest", *W, "--prompts", "{file}")  # a corpus the case prepares
ATTRIBUTE = ("attribute", *W, "--prompt", "When Mary and John")
DRIVERS = ("query", "drivers", "mlp1tc[3]")
TEN_THOUSAND_DIGITS = "mlp1tc[" + "7" * 10_000 + "]"

# A table reads best one case to a row or two: the formatter would spread each over ten.
# fmt: off
CASES = [
    # Weights files: nothing in them runs, whatever the command.
    Case("attribute, crafted layer file", ("attribute", "--model", "{model}", "--transcoders",
         "{tcs}", "--prompt", "x"), 2, "cannot read transcoder file (refused: it names",
         prepare=_crafted_transcoders("layer")),
    Case("ingest, crafted layer file", INGEST, 2, "cannot read transcoder file (refused: it names",
         prepare=_crafted_transcoders("layer")),
    Case("ingest, crafted sparsity file", INGEST, 2, "cannot read feature sparsity (refused: it",
         prepare=_crafted_transcoders("sparsity")),
    Case("NaN in the model's weights", INGEST, 2, "contains NaN or infinite values",
         prepare=_nan_model),
    Case("NaN in a transcoder", INGEST, 2, "W_enc contains NaN or infinite values",
         prepare=_edited_transcoder(_nan_in_w_enc)),
    Case("transcoder narrower than the model", INGEST, 2, "d_in 16 but the model's d_model is 32",
         prepare=_edited_transcoder(_narrow_layer)),
    Case("a layer's transcoder missing", INGEST, 2, "no transcoder file for layer 1",
         prepare=_edited_transcoder(_drop_layer)),
    Case("model folder missing", ("ingest", "--model", "{dir}/none", "--transcoders", "{tcs}",
         "--prompts", "{corpus}"), 2, "none: cannot load model"),
    Case("finite but huge MLP weights", INGEST, 2,
         "the MLP output of layer 0 reaches", prepare=_scaled_model(1e10)),
    Case("MLP weights beyond float32 attribution", INGEST, 2,
         "weight blocks.0.mlp.in.weight reaches", prepare=_scaled_model(1e20)),
    Case("W_enc times 1e30", INGEST, 2, "W_enc reaches", prepare=_edited_transcoder(_huge_w_enc)),
    Case("bare pickle as a layer file", INGEST, 2, "refused: a bare pickle stream, not a file torch.save",
         prepare=_edited_transcoder(_bare_pickle)),
    # Corpora: problems found before any work, naming file and line.
    Case("empty corpus", CORPUS, 2, "empty.txt: no prompts",
         prepare=_file("empty.txt", b"")),
    Case("blank corpus", CORPUS, 2, "blank.txt: no prompts",
         prepare=_file("blank.txt", b"\n  \n")),
    Case("invalid UTF-8", CORPUS, 2,
         "bad.txt:2: invalid UTF-8 at byte 4", prepare=_file("bad.txt", b"ok\nbad \xff\n")),
    Case("binary corpus", CORPUS, 2,
         "bin.txt: binary file (NUL byte at offset 3)", prepare=_file("bin.txt", b"abc\x00")),
    Case("malformed JSONL", CORPUS, 2, "m.jsonl:2: malformed JSON",
         prepare=_file("m.jsonl", b'{"text": "a"}\n{"text": \n')),
    Case("duplicate ids", CORPUS, 2,
         "d.jsonl:2: duplicate prompt id 'a' (first on line 1)",
         prepare=_file("d.jsonl", b'{"id": "a", "text": "x"}\n{"id": "a", "text": "y"}\n')),
    Case("empty field name", CORPUS, 2,
         "e.jsonl:1: field '' has an empty name",
         prepare=_file("e.jsonl", b'{"id": "a", "text": "x", "": 1}\n')),
    Case("30-digit integer", CORPUS, 2,
         "i.jsonl:1: field 'n' holds the integer 123456789012345678901234567890, outside 64 bits",
         prepare=_file("i.jsonl", b'{"id": "a", "text": "x", "n": 123456789012345678901234567890}\n')),
    Case("nested object", CORPUS, 2,
         "o.jsonl:1: field 'meta' holds an object as its value",
         prepare=_file("o.jsonl", b'{"id": "a", "text": "x", "meta": {"k": 1}}\n')),
    Case("corpus missing", ("ingest", *W, "--prompts", "{dir}/nope.txt"), 2, "nope.txt: no such file"),
    Case("JSON nested 5,000 deep", CORPUS, 2,
         "deep.jsonl:1: JSON nested too deeply",
         prepare=_file("deep.jsonl", b'{"id": "a", "text": "x", "m": ' + b"[" * 5000 + b"]" * 5000 + b"}\n")),
    Case("5,000-digit integer in a field", CORPUS, 2,
         "digits.jsonl:1: an integer of 5000 digits; at most 40",
         prepare=_file("digits.jsonl", b'{"id": "a", "text": "x", "n": ' + b"7" * 5000 + b"}\n")),
    Case("NaN in a field", CORPUS, 2,
         "nan.jsonl:1: NaN is not a JSON number", prepare=_file("nan.jsonl", b'{"id": "a", "text": "x", "n": NaN}\n')),
    Case("Infinity in a field", CORPUS, 2,
         "inf.jsonl:1: Infinity is not a JSON number",
         prepare=_file("inf.jsonl", b'{"id": "a", "text": "x", "n": [1, Infinity]}\n')),
    Case("1e999 in a field", CORPUS, 2,
         "big.jsonl:1: the number 1e999 is beyond a 64-bit float's range",
         prepare=_file("big.jsonl", b'{"id": "a", "text": "x", "n": 1e999}\n')),
    Case("corpus /dev/zero", ("ingest", *W, "--prompts", "/dev/zero"), 2,
         "/dev/zero: binary file (NUL byte at offset 0)"),
    Case("a 2 MB corpus line", CORPUS, 2,
         "long.txt:2: a line longer than 1,048,576 bytes",
         prepare=_file("long.txt", b"fine\n" + b"word " * 400_000 + b"\n")),
    # Labels files.
    Case("labels /dev/zero", ("labels", "import", "/dev/zero"), 2, "/dev/zero: binary file"),
    Case("labels nested 5,000 deep", ("labels", "import", "{file}"), 2,
         "deep.jsonl line 1: JSON nested too deeply",
         prepare=_file("deep.jsonl", b'{"layer": 1, "index": ' + b"[" * 5000 + b"]" * 5000 + b"}\n")),
    Case("labels 5,000-digit index", ("labels", "import", "{file}"), 2,
         "digits.jsonl line 1: an integer of 5000 digits",
         prepare=_file("digits.jsonl", b'{"layer": 1, "index": ' + b"7" * 5000 + b', "description": "d"}\n')),
    Case("labels gzip damaged mid-stream", ("labels", "import", "{file}"), 2,
         "labels.jsonl.gz: not a readable gzip file", prepare=_damaged_gzip),
    Case("shard out of range", (*INGEST, "--shard", "3/2"), 2, "--shard '3/2': expected I/N"),
    Case("threshold out of range", (*INGEST, "--node-threshold", "0"), 2,
         "Invalid value for '--node-threshold'"),
    Case("negative heads per edge", (*INGEST, "--heads-per-edge", "-1"), 2,
         "Invalid value for '--heads-per-edge': -1 is not in the range x>=0"),
    Case("prompt over the context", ("attribute", *W, "--prompt", "word " * 200), 2,
         "the model allows 1..64 (pass --truncate to cut it)"),
    Case("empty prompt", ("attribute", *W, "--prompt", "  "), 2, "prompt is empty"),
    # The store's settings.
    Case("NEO4J_URI http://", DRIVERS, 2, "NEO4J_URI 'http://127.0.0.1:7474': scheme http://",
         env={"NEO4J_URI": "http://127.0.0.1:7474"}),
    Case("NEO4J_URI https://", DRIVERS, 2, "scheme https://; expected bolt://",
         env={"NEO4J_URI": "https://example.invalid"}),
    Case("NEO4J_URI ftp://", DRIVERS, 2, "scheme ftp://", env={"NEO4J_URI": "ftp://127.0.0.1"}),
    Case("NEO4J_URI without a scheme", DRIVERS, 2, "NEO4J_URI '127.0.0.1:7687': no scheme",
         env={"NEO4J_URI": "127.0.0.1:7687"}),
    Case("NEO4J_URI not a URI", DRIVERS, 2, "NEO4J_URI 'not a uri': no scheme",
         env={"NEO4J_URI": "not a uri"}),
    Case("NEO4J_URI with a password", DRIVERS, 2, "holds a user name or password",
         env={"NEO4J_URI": "bolt://neo4j:hunter2-secret@127.0.0.1:7687"}, secret="hunter2-secret"),
    Case("no password", DRIVERS, 2, "NEO4J_PASSWORD is not set", env={"NEO4J_PASSWORD": None}),
    Case("wrong password", DRIVERS, 1, "refused the credentials",
         env={"NEO4J_PASSWORD": "wrong-password-1"}, secret="wrong-password-1"),
    Case("unreachable server", DRIVERS, 1, "cannot reach Neo4j at bolt://127.0.0.1:{port}",
         env={"NEO4J_URI": "bolt://127.0.0.1:{port}"}),
    Case("TLS against a plain server", DRIVERS, 1, "TLS with bolt+s://",
         env={"NEO4J_URI": "bolt+s://{host}"}),
    Case("NEO4J_URI port not a number", DRIVERS, 2,
         "NEO4J_URI 'bolt://127.0.0.1:37687x': port '37687x' is not a port number (1 to 65535)",
         env={"NEO4J_URI": "bolt://127.0.0.1:37687x"}),
    Case("--uri port not a number", (*DRIVERS, "--uri", "bolt://127.0.0.1:37687x"), 2,
         "port '37687x' is not a port number"),
    Case("NEO4J_URI unclosed IPv6 bracket", DRIVERS, 2, "an IPv6 address needs its closing ']'",
         env={"NEO4J_URI": "bolt://[::1:7687"}),
    Case("env file /dev/zero", (*DRIVERS, "--env-file", "/dev/zero"), 2,
         "--env-file /dev/zero: larger than 1,048,576 bytes"),
    Case("env file missing", (*DRIVERS, "--env-file", "{dir}/none.env"), 2, "none.env"),
    Case("env file binary", (*DRIVERS, "--env-file", "{file}"), 2, "b.env: not UTF-8 text",
         prepare=_file("b.env", b"\xff\xfe\x00\x01 NEO4J_PASSWORD")),
    # Names and numbers.
    Case("10,000-digit feature index", ("query", "drivers", TEN_THOUSAND_DIGITS), 2,
         "(10008 chars): expected mlp<layer>tc[<index>]"),
    Case("malformed feature name", ("query", "drivers", "mlp1tc31"), 2,
         "feature 'mlp1tc31': expected"),
    Case("layer out of range", ("query", "drivers", "mlp99tc[1]"), 2,
         "layer 99 is out of range"),
    Case("index out of range", ("query", "examples", "mlp1tc[64]"), 2,
         "index 64 is out of range"),
    Case("injection in a feature name", ("query", "drivers", "mlp0tc[1]}) DETACH DELETE n //"),
         2, "expected mlp<layer>tc[<index>]"),
    Case("injection in a prompt key", ("query", "paths", "--prompt", "x' OR 1=1 //"), 2,
         "unknown prompt \"x' OR 1=1 //\""),
    Case("injection in a set name", (*DRIVERS, "--transcoder-set", "x`}) DETACH DELETE (n) //"),
         2, "unknown transcoder set"),
    Case("--top beyond 64 bits", (*DRIVERS, "--top", "99999999999999999999"), 2,
         "Invalid value for '--top'"),
    Case("--top 0", (*DRIVERS, "--top", "0"), 2, "Invalid value for '--top'"),
    Case("--limit -1", ("query", "cypher", "RETURN 1", "--limit", "-1"), 2,
         "Invalid value for '--limit'"),
    Case("--window -5", ("query", "examples", "mlp1tc[3]", "--window", "-5"), 2,
         "Invalid value for '--window'"),
    Case("--export into a missing folder", ("query", "circuit", "--prompt", "{prompt}",
         "--export", "graphml", "{dir}/none/c.graphml"), 2, "none does not exist"),
    Case("--out into a missing folder", ("query", "export-graph", "--prompt", "{prompt}",
         "--out", "{dir}/none/g.json"), 2, "none does not exist"),
    # The read-only Cypher command.
    Case("cypher LOAD CSV from a URL", ("query", "cypher",
         "LOAD CSV FROM 'http://127.0.0.1:9/x.csv' AS r RETURN r"), 2, "refused: LOAD CSV"),
    Case("cypher TERMINATE", ("query", "cypher", "TERMINATE TRANSACTIONS 'neo4j-transaction-1'"),
         2, "refused: TERMINATE is an administration command"),
    Case("cypher administration", ("query", "cypher", "CREATE USER bob SET PASSWORD 'abcdefgh1'"),
         2, "plans this statement as a schema or administration command"),
    Case("cypher write", ("query", "cypher", "MATCH (n) DETACH DELETE n"), 2,
         "plans this statement as a write"),
    Case("cypher syntax error", ("query", "cypher", "MATCH (n RETURN n"), 2,
         "Neo4j refused the statement"),
    Case("cypher malformed parameter", ("query", "cypher", "RETURN 1", "-p", "1x=2"), 2,
         "parameter '1x=2': expected name=value"),
    Case("cypher parameter nested 50,000 deep", ("query", "cypher", "RETURN $p", "-p",
         "p=" + "[" * 50_000 + "]" * 50_000), 2, "parameter 'p': JSON nested too deeply"),
    Case("cypher 5,000-digit parameter", ("query", "cypher", "RETURN $p", "-p", "p=" + "7" * 5000),
         2, "parameter 'p': an integer of 5000 digits"),
    Case("--skip beyond 64 bits", ("query", "prompts", "--skip", "99999999999999999999"), 2,
         "Invalid value for '--skip'"),
    # Interventions and Ray.
    Case("verify --scale 1e308", ("verify", "--prompt", "{prompt}", "--scale", "1e308"), 2,
         "scale 1e+308: expected a finite number other than 1, from -1000 to 1000"),
    Case("verify --scale -1e308", ("verify", "--prompt", "{prompt}", "--scale", "-1e308"), 2,
         "scale -1e+308: expected a finite number other than 1, from -1000 to 1000"),
    Case("--ray not an address", (*INGEST, "--ray", "not-an-address"), 2,
         "--ray 'not-an-address': Invalid address format"),
    Case("--ray ray:// without Ray's client", (*INGEST, "--ray", "ray://127.0.0.1:1"), 2,
         "--ray 'ray://127.0.0.1:1': "),
    # Where state lives, and the run catalog.
    Case("CIRCUITSTORE_HOME below a file", INGEST, 2, "lies below", env={"CIRCUITSTORE_HOME": "{home}"},
         prepare=_home_below_a_file),
    Case("catalog driver not installed", (*INGEST, "--catalog", _missing_driver()), 1,
         "is not installed (pip install ", secret="s3cret-pw"),
    Case("catalog URL unreadable", (*INGEST, "--catalog", "not a url"), 1, "--catalog is not a database URL"),
    Case("catalog port not a number", (*INGEST, "--catalog", "postgresql://u:s3cret-pw@127.0.0.1:x5432/db"),
         2, "--catalog is not a database URL (port 'x5432' is not a port number", secret="s3cret-pw"),
    Case("catalog unclosed IPv6 bracket", (*INGEST, "--catalog", "postgresql://u:s3cret-pw@[::1:5432/db"),
         2, "an IPv6 address needs its closing ']'", secret="s3cret-pw"),
    # Graph settings that differ from those the store's set was ingested with.
    Case("--max-tokens on an existing store", (*INGEST, "--max-tokens", "8"), 2,
         "(--max-tokens None there, 8 here)"),
    Case("--truncate on an existing store", (*INGEST, "--truncate"), 2,
         "(--truncate False there, True here)"),
    # The bulk path: parts to a place they cannot go, and folders `load` refuses (before any
    # server is touched).
    Case("--parts below a file", (*INGEST, "--parts", "/dev/null/parts"), 2,
         "/dev/null/parts: cannot write parts there"),
    Case("--parts scheme pyarrow lacks", (*INGEST, "--parts", "nosuch://bucket/parts"), 2,
         "pyarrow cannot open nosuch:// URLs"),
    Case("load, not a parts folder", ("load", "{dir}"), 2, "no transcoder_set.parquet"),
    Case("load, a foreign file", ("load", "{dir}"), 2, "transcoder_set.parquet: not a circuitstore",
         prepare=_parts_file({})),
    Case("load, a truncated file", ("load", "{dir}"), 2, "not a readable Parquet file",
         prepare=_parts_file(None)),
    Case("load, an unknown format version", ("load", "{dir}"), 2, "parts format version 99",
         prepare=_parts_file({b"circuitstore.parts": b"99"})),
    # The local server.
    Case("short server password", ("server", "start", "--home", "{dir}/srv"), 2,
         "NEO4J_PASSWORD is 5 characters long; Neo4j needs at least 8",
         env={"NEO4J_PASSWORD": "short"}, secret="short"),
    Case("server port out of range", ("server", "start", "--home", "{dir}/srv", "--bolt-port",
         "70000"), 2, "Invalid value for '--bolt-port'"),
]
# fmt: on


@pytest.fixture(scope="module")
def filled(driver, neo4j_settings, tiny_weights, tmp_path_factory):  # type: ignore[no-untyped-def]
    folder = tmp_path_factory.mktemp("bad-input")
    fill(driver, neo4j_settings.database, tiny_weights, folder)
    with driver.session() as s:
        key = s.run("MATCH (p:Prompt) RETURN p.key AS k ORDER BY k LIMIT 1").single()["k"]
    return {"prompt": key, "corpus": str(folder / "corpus.txt")}


def fingerprint(driver) -> tuple:  # type: ignore[no-untyped-def]
    """Counts and sums that any write would move: nodes, relationships, aggregates."""
    with driver.session() as s:
        nodes = s.run("MATCH (n) RETURN count(n) AS c").single()["c"]
        rels = s.run("MATCH ()-[r]->() RETURN count(r) AS c").single()["c"]
        drives = s.run("MATCH ()-[d:DRIVES]->() RETURN sum(d.n) AS n, sum(d.sum) AS s").single()
        feats = s.run("MATCH (f:Feature) RETURN sum(f.nActive) AS n, count(f) AS c").single()
        labels = s.run("CALL db.labels() YIELD label RETURN collect(label) AS l").single()["l"]
    return nodes, rels, drives["n"], drives["s"], feats["n"], feats["c"], sorted(labels)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input(case, filled, driver, neo4j_env, tiny_weights, tmp_path):  # type: ignore[no-untyped-def]
    model, tcs = tiny_weights
    host = neo4j_env.uri.split("://", 1)[1]
    places = {
        "model": str(model),
        "tcs": str(tcs),
        "corpus": filled["corpus"],
        "prompt": filled["prompt"],
        "dir": str(tmp_path),
        "port": str(_free_port()),
        "host": host,
    }
    if case.prepare is not None:
        case.prepare(tmp_path, places)
    args = [a.format(**places) if "{" in a and len(a) < 200 else a for a in case.args]
    env = {"CIRCUITSTORE_HOME": str(tmp_path / "home")}
    env.update({k: (v.format(**places) if v else v) for k, v in case.env.items()})
    before = fingerprint(driver)

    result = CliRunner(env=env).invoke(cli, args)

    assert result.exit_code == case.code, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(
        result.exception
    )
    assert "Traceback" not in result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, result.stderr
    assert case.expect.format(**places) in errors[0]
    assert len(errors[0]) < 400
    if case.secret is not None:
        assert case.secret not in result.output
    assert not (tmp_path / "MARKER").exists(), "a weights file ran code"
    assert fingerprint(driver) == before
