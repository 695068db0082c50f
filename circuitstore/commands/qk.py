"""`circuitstore qk`: why a head attends where it does. One head's attention score at a (query,
key) pair of a stored prompt, split into the bilinear terms of the prompt's graph nodes."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import click

from circuitstore.clitools import HELP, CircuitStoreCommand, device_option, top_option
from circuitstore.commands.query_io import open_store, store_options
from circuitstore.query.heads.read import edge_head
from circuitstore.query.qk.records import CHECK_COLUMNS, QKCheck, QKTerm, QKTrace
from circuitstore.query.store import CircuitStore
from circuitstore.query.tables import node_text
from circuitstore.schema.connection import Neo4jSettings
from circuitstore.schema.errors import ConfigError, QueryError
from circuitstore.schema.names import (
    TRANSCODER,
    FeatureFamily,
    in_family,
    parse_head,
    parse_node,
    respell,
)

if TYPE_CHECKING:
    from circuitstore.ingest.config import Mode
    from circuitstore.ingest.qk import HeadTrace
    from circuitstore.ingest.qk.decompose import RawTrace
    from circuitstore.ingest.qk.removal import Removal
    from circuitstore.ingest.qkstore.write import TracedEdge
    from circuitstore.query.prompts.records import PromptInfo

MODES = ("exact", "lumped")
# At most this many removal checks (each is two forward passes).
MAX_CHECK = 100


@dataclass(frozen=True)
class QKConfig:
    """What to trace: a head (`attn2[3]`) at (query, key) positions, or the head that carries
    the most of a stored edge (`edge`: source and target local ids) at its positions. `mode`
    defaults to the prompt's own; `model` and `transcoders` to those its transcoder set was
    ingested from (their weights must hash to the recorded ones)."""

    prompt: str
    head: str | None = None
    query: int | None = None
    key: int | None = None
    edge: tuple[str, str] | None = None
    top: int = 10
    mode: str | None = None
    check: int = 5
    model: str | None = None
    transcoders: str | None = None
    device: str = "auto"

    def __post_init__(self) -> None:
        if (self.edge is None) == (self.head is None):
            raise ConfigError("name a head (--head with --query and --key) or an --edge, not both")
        if self.head is not None and (self.query is None or self.key is None):
            raise ConfigError("--head needs --query and --key (the positions)")
        if self.edge is not None and (self.query is not None or self.key is not None):
            raise ConfigError("--edge takes its positions from the edge: drop --query and --key")
        if not 1 <= self.top <= 1000:
            raise ConfigError(f"top {self.top}: expected 1..1000")
        if not 0 <= self.check <= MAX_CHECK:
            raise ConfigError(f"check {self.check}: expected 0..{MAX_CHECK}")
        if self.mode is not None and self.mode not in MODES:
            raise ConfigError(f"mode {self.mode!r}: expected exact or lumped")


@click.command("qk", cls=CircuitStoreCommand, context_settings=HELP)
@click.option("--prompt", required=True, help="The prompt's key.")
@click.option("--head", help="The attention head: attn<layer>[<head>], e.g. attn2[3].")
@click.option("--query", type=int, help="The query position (the head attends from here).")
@click.option("--key", type=int, help="The key position (attended to; at most --query).")
@click.option(
    "--edge",
    nargs=2,
    metavar="SOURCE TARGET",
    help="Instead of --head/--query/--key: the head that carries the most of this stored edge "
    "(local ids, e.g. mlp0tc[70]@3 mlp1tc[12]@9), at its positions (query: the target's, key: "
    "the source's).",
)
@top_option(10, "At most this many terms of each part (pairs, query side, key side).")
@click.option(
    "--mode",
    type=click.Choice(MODES),
    help="How attention outputs below the head are expanded [default: the prompt's mode].",
)
@click.option(
    "--check",
    default=5,
    show_default=True,
    type=click.IntRange(0, MAX_CHECK),
    help="Remove this many of the strongest graph nodes (by |marginal|) from the forward pass "
    "and set the score's change, LayerNorm frozen and free, beside the prediction.",
)
@click.option(
    "--store",
    "store_it",
    is_flag=True,
    help="Also write the trace into the store, linked to its prompt and the graph nodes it "
    "names (tracing the same head and positions again replaces it).",
)
@click.option("--model", help="The model's folder or hub name [default: as ingested].")
@click.option("--transcoders", help="The transcoders' folder or repo [default: as ingested].")
@device_option()
@store_options
def qk(
    prompt: str,
    head: str | None,
    query: int | None,
    key: int | None,
    edge: tuple[str, str] | None,
    top: int,
    mode: str | None,
    check: int,
    store_it: bool,
    model: str | None,
    transcoders: str | None,
    device: str,
    settings: Neo4jSettings,
    fmt: str,
    tset: str | None,
) -> None:
    """Why a head attends where it does: its attention score at (query, key) split into the
    bilinear terms of the prompt's graph nodes (LayerNorm's scale frozen, as for every stored
    edge). Prints the strongest pairs (query contributor, key contributor), each side's
    strongest marginals (a contributor's terms summed over the whole other side), the model's
    score (hook_attn_scores) beside the sum of every term, the attention probability, and
    removal checks. Nothing is written unless --store.

    \b
    Example:
      circuitstore qk --prompt eval-ioi-000010 --head "attn1[0]" --query 14 --key 4
    \b
    Example, the head that carries the most of a stored edge:
      circuitstore qk --prompt eval-ioi-000010 --edge "embed0@4" "mlp0tc[70]@14"
    """
    cfg = QKConfig(
        prompt, head, query, key, edge or None, top, mode, check, model, transcoders, device
    )
    with open_store(settings, tset) as store:
        info = store.prompt(prompt)
        family = store.tset(info.transcoder_set).family
        done, on_edge = traced(cfg, store)
        trace = as_record(done.trace, info, done.removals, family)
        if store_it:
            from circuitstore.ingest.qkstore.write import TracedPrompt, write_traces

            owner = TracedPrompt(info.id, info.key, info.transcoder_set, family)
            write_traces(store.driver, store.database, owner, [(done.trace, on_edge)])
    if fmt == "json":
        click.echo(trace_json(trace))
        return
    if fmt == "csv":
        from circuitstore.clitools import render_rows

        click.echo(render_rows(trace.rows(), "csv", ("part", "rank", "query", "key", "value")))
        return
    click.echo(trace_text(trace, info))


def trace_prompt(cfg: QKConfig, store: CircuitStore) -> QKTrace:
    """Trace `cfg` on its stored prompt, with the weights it was ingested with (nothing is
    written). Refuses an unknown prompt, head or edge, bad positions and other weights."""
    done = traced(cfg, store)[0]
    info = store.prompt(cfg.prompt)
    return as_record(done.trace, info, done.removals, store.tset(info.transcoder_set).family)


def traced(cfg: QKConfig, store: CircuitStore) -> tuple[HeadTrace, TracedEdge | None]:
    """The ingest side's trace of `cfg`, and the stored edge it was made for (`--edge`)."""
    from circuitstore.ingest.intervene.verify import load_recorded
    from circuitstore.ingest.qk import check_head, trace_head
    from circuitstore.ingest.qkstore.write import TracedEdge

    info = store.prompt(cfg.prompt)
    edge = None
    if cfg.edge is not None:
        found = edge_head(store, cfg.prompt, *cfg.edge)
        layer, head, query, key = found.layer, found.head, found.query_pos, found.key_pos
        family = store.tset(info.transcoder_set).family
        source, target = (in_family(parse_node(x), family) for x in cfg.edge)  # as stored
        edge = TracedEdge(source, target, found.edge_weight)
    else:
        if cfg.head is None or cfg.query is None or cfg.key is None:
            raise ConfigError("--head needs --query and --key (the positions)")
        (layer, head), query, key = parse_head(cfg.head), cfg.query, cfg.key
    mode: Mode = "lumped" if (cfg.mode or _stored_mode(store, info)) == "lumped" else "exact"
    weights = store.tset(info.transcoder_set)
    if not info.token_ids:
        raise QueryError(f"prompt {info.key} stores no token ids: ingest it again")
    n_pos = len(info.token_ids)
    # Refused before the model loads where the store knows the sizes (the model checks again).
    check_head(weights.n_layers, weights.n_heads or head + 1, layer, head, query, key, n_pos)
    engine = load_recorded(weights, info, cfg.model, cfg.transcoders, cfg.device)
    done = trace_head(
        engine, info.token_ids, layer, head, query, key, mode=mode, top=cfg.top, check=cfg.check
    )
    return done, edge


def _stored_mode(store: CircuitStore, info: PromptInfo) -> str:
    return str(store.prompt_summary(info.id).accounting.get("mode") or "exact")


class TracedPromptLike(Protocol):
    """What a trace record needs of its prompt (a `PromptInfo` or a `TracedPrompt`)."""

    @property
    def id(self) -> str: ...
    @property
    def key(self) -> str: ...
    @property
    def transcoder_set(self) -> str: ...


def as_record(
    raw: RawTrace,
    prompt: TracedPromptLike,
    removals: Sequence[Removal] = (),
    family: FeatureFamily = TRANSCODER,
) -> QKTrace:
    """The ingest side's trace (and its removal checks, which the store does not keep) as the
    record the store and the query side read, its contributors spelled in the set's `family`
    (the engine writes TRANSCODER's spelling)."""

    def name(x: str) -> str:
        return respell(x, family)

    return QKTrace(
        prompt=prompt.key,
        prompt_id=prompt.id,
        transcoder_set=prompt.transcoder_set,
        layer=raw.layer,
        head=raw.head,
        query_pos=raw.query_pos,
        key_pos=raw.key_pos,
        mode=raw.mode,
        score=raw.score,
        total=raw.total,
        probability=raw.probability,
        n_query=raw.n_query,
        n_key=raw.n_key,
        pairs=tuple(QKTerm(name(q), name(k), v) for q, k, v in raw.pairs),
        query_side=tuple(QKTerm(name(q), None, v) for q, v in raw.query_side),
        key_side=tuple(QKTerm(None, name(k), v) for k, v in raw.key_side),
        checks=tuple(QKCheck(name(r.node), r.predicted, r.frozen, r.observed) for r in removals),
    )


def trace_json(trace: QKTrace) -> str:
    """The trace as one JSON object: its summary, its terms by part, its checks."""
    import json

    out: dict[str, Any] = trace.as_row()
    out |= {"prompt_id": trace.prompt_id, "transcoder_set": trace.transcoder_set}
    out["pairs"] = [t.as_row() for t in trace.pairs]
    out["query_side"] = [{"query": t.query, "value": t.value} for t in trace.query_side]
    out["key_side"] = [{"key": t.key, "value": t.value} for t in trace.key_side]
    out["checks"] = [c.as_row() for c in trace.checks]
    return json.dumps(out, indent=2)


def _shown(name: str | None, info: PromptInfo) -> str:
    """A contributor with the prompt's token at its position."""
    if name is None:
        return ""
    pos = name.rsplit("@", 1)[1].rstrip("]")
    return node_text(name, info.token_at(int(pos)))


def trace_text(trace: QKTrace, info: PromptInfo) -> str:
    """The trace as a person reads it: a summary, then the terms and checks as tables."""
    from circuitstore.clitools import render_table

    q_tok, k_tok = info.token_at(trace.query_pos), info.token_at(trace.key_pos)
    head = f"{trace.head_name} in prompt {trace.prompt} ({trace.mode} mode): query "
    lines = [
        head
        + node_text(f"@{trace.query_pos}", q_tok)
        + ", key "
        + node_text(f"@{trace.key_pos}", k_tok),
        f"score {trace.score:.6g} (hook_attn_scores), sum of all {trace.n_query} x {trace.n_key} "
        f"terms {trace.total:.6g}; attention probability {trace.probability:.4g}",
        "",
    ]
    pairs = [
        {
            "rank": i + 1,
            "query": _shown(t.query, info),
            "key": _shown(t.key, info),
            "value": t.value,
        }
        for i, t in enumerate(trace.pairs)
    ]
    lines += ["pairs (query contributor . key contributor / sqrt(d_head))"]
    lines += [render_table(pairs, ("rank", "query", "key", "value"), ("value",)), ""]
    for title, terms, side in (
        ("query side (each term summed over the whole key)", trace.query_side, "query"),
        ("key side (each term summed over the whole query)", trace.key_side, "key"),
    ):
        rows = [
            {"rank": i + 1, side: _shown(getattr(t, side), info), "value": t.value}
            for i, t in enumerate(terms)
        ]
        lines += [title, render_table(rows, ("rank", side, "value"), ("value",)), ""]
    if trace.checks:
        rows = [{**c.as_row(), "node": _shown(c.node, info)} for c in trace.checks]
        lines += [
            "removal checks: the score's change predicted by the trace, with LayerNorm frozen, "
            "and in the real model",
            render_table(rows, CHECK_COLUMNS, CHECK_COLUMNS[1:]),
        ]
    return "\n".join(lines).rstrip("\n")
