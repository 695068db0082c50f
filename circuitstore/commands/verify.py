"""`circuitstore verify`: a prompt's stored graph checked against the model, by intervention."""

from __future__ import annotations

from itertools import groupby
from typing import TYPE_CHECKING, Any

import click

from circuitstore.clitools import HELP, CircuitStoreCommand, device_option, top_option
from circuitstore.commands.query_io import emit_readable, open_store, store_options
from circuitstore.query.store import CircuitStore
from circuitstore.query.tables import token_text
from circuitstore.schema.connection import Neo4jSettings
from circuitstore.schema.errors import QueryError
from circuitstore.schema.names import FeatureRef, parse_node

if TYPE_CHECKING:
    from circuitstore.ingest.intervene.stored import StoredPrompt
    from circuitstore.ingest.intervene.verify import Check, VerifyConfig, VerifyReport

COLUMNS = (
    "check", "features", "influence", "targets", "frozen_error",
    "predicted_diff", "observed_diff", "predicted_logit", "observed_logit", "flips",
)  # fmt: skip
# A table cell listing more than this many characters of features is abbreviated with counts
# (JSON and CSV keep every feature).
MAX_CELL = 60


@click.command("verify", cls=CircuitStoreCommand, context_settings=HELP)
@click.option("--prompt", required=True, help="The prompt's key.")
@click.option(
    "--feature",
    "features",
    multiple=True,
    help="A stored feature to intervene on (repeatable): mlp0tc[70]@14, or mlp0tc[70] for all "
    "its stored occurrences at once. Default: the --top best by --rank.",
)
@top_option(10, "Without --feature: at most this many stored features, best by --rank.")
@click.option(
    "--rank",
    type=click.Choice(["support", "effect", "influence"]),
    default="support",
    show_default=True,
    help="Without --feature, choose by the stored graph: support (most lift the answer's logit "
    "over the runner-up's), effect (largest predicted change of that difference either way) "
    "or influence (on the answer's logit, unsigned).",
)
@click.option(
    "--scale",
    default=0.0,
    show_default=True,
    type=float,
    help="Multiply the features' activations by this: 0 removes them.",
)
@click.option("--model", help="The model's folder or hub name [default: as ingested].")
@click.option("--transcoders", help="The transcoders' folder or repo [default: as ingested].")
@click.option("--no-write", is_flag=True, help="Only print; store no (:Intervention) nodes.")
@device_option()
@store_options
def verify(
    prompt: str,
    features: tuple[str, ...],
    top: int,
    rank: str,
    scale: float,
    model: str | None,
    transcoders: str | None,
    no_write: bool,
    device: str,
    settings: Neo4jSettings,
    fmt: str,
    tset: str | None,
) -> None:
    """Check a prompt's stored graph by intervening on its features: in the frozen replacement
    model each stored edge must equal the change it predicts (frozen_error: the largest
    deviation over the feature's stored targets, each relative to its target's stored |input|);
    in the real model the change of the answer's logit difference to the runner-up is set beside the
    graph's prediction through all its stored paths. Each check is stored as an
    (:Intervention) node linked to the prompt and the features.

    \b
    Example:
      circuitstore verify --prompt eval-ioi-000010 --top 5
    """
    from circuitstore.ingest.intervene.verify import VerifyConfig
    from circuitstore.ingest.intervene.write import write_report

    cfg = VerifyConfig(prompt, features, top, scale, model, transcoders, device, rank)
    with open_store(settings, tset) as store:
        report = check_prompt(cfg, store)
        written = 0 if no_write else write_report(store.driver, store.database, report)
    emit_readable(report.rows(), fmt, COLUMNS, _table(report))
    if fmt == "table":
        click.echo(_summary(report, written))


def check_prompt(cfg: VerifyConfig, store: CircuitStore) -> VerifyReport:
    """Verify `cfg.prompt` of `store` (nothing is written; see `write.write_report`)."""
    from circuitstore.ingest.intervene.verify import Verifier

    return Verifier(cfg, stored_prompt(store, cfg.prompt, cfg.features)).run()


def stored_prompt(store: CircuitStore, key: str, features: tuple[str, ...]) -> StoredPrompt:
    """What verify checks, read from the store: the prompt's graph, mode and recorded weights,
    and each named feature's stored occurrences (refused here, before any model loads, when the
    graph lacks them)."""
    from circuitstore.ingest.intervene.stored import StoredPrompt

    info, graph = store.prompt_graph(key)
    mode = str(store.prompt_summary(info.id).accounting.get("mode") or "exact")
    groups = []
    for name in features:
        ref = parse_node(name)
        if not isinstance(ref, FeatureRef):
            raise QueryError(f"{name}: verify intervenes on features, not on {ref.name}")
        groups.append(tuple(store.find_nodes(graph, ref, info)))
    return StoredPrompt(info, graph, mode, store.tset(info.transcoder_set), tuple(groups))


def _table(report: VerifyReport) -> list[dict[str, Any]]:
    """The report's rows as a person reads them: short feature cells (the `together` row refers
    to the rows above it), and `flips` naming the token that took the top."""
    singles = [_readable(c, "single", _features(c.features)) for c in report.checks]
    above = f"all {len(report.checks)} above" if len(report.checks) > 1 else singles[0]["features"]
    return [*singles, _readable(report.circuit, "together", above)]


def _readable(check: Check, kind: str, features: str) -> dict[str, Any]:
    flips = f"to {token_text(check.top_token)}" if check.flips else "no"
    return {**check.as_row(), "check": kind, "features": features, "flips": flips}


def _features(nodes: tuple[str, ...]) -> str:
    """`mlp0tc[70]@14`, or one feature's occurrences as `mlp0tc[70]@3,7,14`, or past MAX_CELL
    characters, counts: `mlp0tc[70] at 9 positions`."""
    named = groupby(nodes, key=lambda n: n.partition("@")[0])
    parts = [(name, [n.partition("@")[2] for n in group]) for name, group in named]
    cell = ", ".join(f"{name}@{','.join(pos)}" for name, pos in parts)
    if len(cell) <= MAX_CELL:
        return cell
    cell = ", ".join(f"{name} at {len(pos)} positions" for name, pos in parts)
    if len(cell) <= MAX_CELL:
        return cell
    return f"{len(nodes)} occurrences of {len(parts)} features"


def _summary(report: VerifyReport, written: int) -> str:
    agree = ", ".join(
        f"{k.replace('_', ' ')} {v:.3g}" if v is not None else f"{k.replace('_', ' ')} n/a"
        for k, v in report.agreement.items()
    )
    lines = [
        f"prompt {report.prompt.key} ({report.mode} mode): answer {report.answer[1]!r}, "
        f"runner-up {report.runner_up[1]!r}, scale {report.scale:g}",
        "frozen replacement model: largest deviation from a stored edge, relative to its "
        f"target's stored input: "
        f"{max(c.frozen_error for c in (*report.checks, report.circuit)):.2g}",
        f"real model vs the graph's prediction, over the single checks: {agree}",
    ]
    if written:
        lines.append(f"stored {written} (:Intervention) nodes")
    return "\n".join(lines)
