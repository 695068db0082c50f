"""`ingest --parts DIR`: each prompt's rows as Parquet parts instead of a Neo4j transaction.

The same calls as `StoreWriter`, so the runner, shards and Ray work unchanged; nothing talks to
Neo4j. A prompt is written when its `prompts/` file exists (written last), so a kill at any
moment and a resume leave exactly the files of a clean run.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from circuitstore.ingest.parts import format as fmt
from circuitstore.ingest.parts.folder import Folder
from circuitstore.schema.errors import ConfigError

if TYPE_CHECKING:
    from circuitstore.ingest.payload import PromptPayload
    from circuitstore.ingest.writer import TranscoderSetNode

HEAD_FIELDS = ("heads", "headWeights", "otherHeads", "residual")


class PartsWriter:
    """Writes a transcoder set, its features and views, and prompts as parts in `url`."""

    def __init__(self, url: str) -> None:
        self.folder = Folder.open(url)
        self.folder.check_writable(fmt.PROMPT_TABLES + fmt.LAYER_TABLES)
        self.where = self.folder.shown
        self.stamp: fmt.Stamp | None = None

    def check_transcoder_set(self, info: TranscoderSetNode) -> None:
        """Refuse a folder that holds parts of another set or other graph settings."""
        self.stamp = fmt.Stamp(info.id, info.graph_config_hash)
        held = self._held_stamp()
        if held is None or held == self.stamp:
            return
        what = (
            f"transcoder set {held.transcoder_set}"
            if held.transcoder_set != info.id
            else f"transcoder set {info.id} under other graph settings (hash {held.graph_hash})"
        )
        raise ConfigError(
            f"{self.where} holds parts of {what}; this run's are {info.id} with settings hash "
            f"{info.graph_config_hash}: use another --parts folder"
        )

    def ensure_transcoder_set(
        self, info: TranscoderSetNode, features: Iterable[dict[str, Any]]
    ) -> bool:
        """The set's features per layer, then the set's row (its presence marks them complete).
        True if written now."""
        self.check_transcoder_set(info)
        if self.folder.exists(fmt.SET_FILE):
            return False
        by_layer: dict[int, list[dict[str, Any]]] = defaultdict(list)
        for row in features:
            by_layer[row["props"]["layer"]].append({"id": row["id"], **row["props"]})
        for layer, rows in sorted(by_layer.items()):
            self._write(f"features/{fmt.layer_name(layer)}", "features", rows)
        props = {"id": info.id, **info.stored_props()}
        self.folder.write(fmt.SET_FILE, fmt.table("transcoder_set", [props], self._stamp()))
        return True

    def has_features(self, set_id: str) -> bool:
        """Whether the set and all its features are in the folder."""
        self._ours(set_id)
        return self.folder.exists(fmt.SET_FILE)

    def view_layers(self, set_id: str) -> set[int]:
        """The layers whose views are in the folder."""
        self._ours(set_id)
        return {int(name[1:4]) for name in self.folder.names("views")}

    def write_views(
        self, set_id: str, layer: int, tokens: list[dict[str, Any]], virtual: list[dict[str, Any]]
    ) -> bool:
        """One layer's virtual weights, then its views (whose file marks the layer done)."""
        self._ours(set_id)
        name = fmt.layer_name(layer)
        if self.folder.exists(f"views/{name}"):
            return False
        weights = [
            {"source": s[0], "target": r["target"], "weight": s[1]}
            for r in virtual
            for s in r["sources"]
        ]
        self._write(f"virtual_weights/{name}", "virtual_weights", weights)
        self._write(f"views/{name}", "views", [{"id": r["id"], **r["props"]} for r in tokens])
        return True

    def existing_prompts(self, ids: Sequence[str]) -> dict[str, str]:
        """Which of `ids` have parts here, and from which run."""
        names = {pid: fmt.part_name(pid) for pid in ids}
        if len(ids) > 64:  # one listing, not a lookup each
            held = set(self.folder.names("prompts"))
            there = [pid for pid, name in names.items() if name in held]
        else:
            there = [pid for pid, name in names.items() if self.folder.exists(f"prompts/{name}")]
        runs = (self.folder.read(f"prompts/{names[pid]}", columns=["run"]) for pid in there)
        return {pid: str(t.column("run")[0].as_py()) for pid, t in zip(there, runs, strict=True)}

    def check_fits(self, payload: PromptPayload) -> None:
        """Parts have no transaction to outgrow."""

    def write_prompt(self, payload: PromptPayload) -> bool:
        """The prompt's tables, its `prompts/` file last. False if it was there already."""
        name = fmt.part_name(payload.prompt_id)
        if self.folder.exists(f"prompts/{name}"):
            return False
        for table, columns in _prompt_columns(payload).items():
            self.folder.write(f"{table}/{name}", fmt.column_table(table, columns, self._stamp()))
        self._write(f"prompts/{name}", "prompts", [payload.prompt])  # last: the commit
        return True

    def _ours(self, set_id: str) -> None:
        """A set other than the one checked is a caller's mistake."""
        if set_id != self._stamp().transcoder_set:
            raise ConfigError(
                f"{self.where} holds set {self._stamp().transcoder_set}, not {set_id}"
            )

    def _stamp(self) -> fmt.Stamp:
        if self.stamp is None:
            raise ConfigError("parts written before the transcoder set was checked")
        return self.stamp

    def _write(self, rel: str, table: str, rows: list[dict[str, Any]]) -> None:
        self.folder.write(rel, fmt.table(table, rows, self._stamp()))

    def _held_stamp(self) -> fmt.Stamp | None:
        """The stamp of the folder's parts so far: its set file's, else any prompt's."""
        if self.folder.exists(fmt.SET_FILE):
            return self.folder.stamp(fmt.SET_FILE, "transcoder_set")
        names = self.folder.names("prompts")
        return self.folder.stamp(f"prompts/{names[0]}", "prompts") if names else None


def _prompt_columns(p: PromptPayload) -> dict[str, dict[str, list[Any]]]:
    """The prompt's columns per table, in the order they are written (`prompts` last). Built
    column by column: from rows (dicts, then `from_pylist`) a 50,000-edge prompt took 0.38 s,
    more than an H200 takes to compute it (benchmarks/bench_load.py)."""
    ids = [props["id"] for _, props in p.nodes]
    nodes = {c: [props.get(c) for _, props in p.nodes] for c in fmt.NODE_COLUMNS}
    nodes["label"] = [label for label, _ in p.nodes]
    edges: dict[str, list[Any]] = {
        "source": [ids[e[0]] for e in p.edges],
        "target": [ids[e[1]] for e in p.edges],
        "weight": [e[2] for e in p.edges],
        "kind": [e[3] for e in p.edges],
    }
    for i, name in enumerate(HEAD_FIELDS, start=4):
        edges[name] = [e[i] if len(e) > i else None for e in p.edges]
    edges["prompt"] = [p.prompt_id] * len(p.edges)
    occurrences = {
        "feature": [f["id"] for f in p.features],
        "n": [f["n"] for f in p.features],
        "sum": [f["sum"] for f in p.features],
        "max": [t["activation"] for t in p.top],
        "pos": [t["pos"] for t in p.top],
        "prompt": [p.prompt_id] * len(p.features),
    }
    drives = {k: [d[k] for d in p.drives] for k in ("n", "sum", "sumAbs", "maxAbs")}
    drives.update(
        source=[d["s"] for d in p.drives],
        target=[d["t"] for d in p.drives],
        prompt=[p.prompt_id] * len(p.drives),
    )
    return {"nodes": nodes, "edges": edges, "occurrences": occurrences, "drives": drives}
