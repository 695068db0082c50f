"""`circuitstore demo`: the shipped demo model through a store, and what the store finds in it.

Starts the local Neo4j server unless it runs (or, with --no-server, uses the store NEO4J_URI
names), applies the schema, ingests a deterministic share of the shipped demo corpus with the
shipped model and transcoders (resumable: run again, nothing is written twice), then asks the
store a few questions through `circuitstore.query.CircuitStore`. Each answer is printed with the
`circuitstore query` command that asks it, node ids with their tokens, and each prompt's expected
answer beside the logit the store reached it through.
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from circuitstore import demo as assets
from circuitstore.clitools import HELP, CircuitStoreCommand, connection_options, render_table
from circuitstore.commands.server import start_options
from circuitstore.demo.cypher import BROWSER_QUERY
from circuitstore.query import CircuitStore
from circuitstore.query.results import Node, PromptInfo, Subgraph
from circuitstore.schema.apply import apply_schema
from circuitstore.schema.connection import DEFAULT_URI, Neo4jSettings, display_uri, open_driver
from circuitstore.schema.errors import ConfigError, QueryError
from circuitstore.schema.names import NodeKind, parse_feature
from circuitstore.server import process
from circuitstore.server.config import (
    DEMO_HEAP,
    DEMO_PAGECACHE,
    PASSWORD_ENV,
    ServerSettings,
    default_home,
    validate_password,
)

RUN = "demo"
SERVER_TIMEOUT = 180.0
# The tasks whose first prompt in the shard the demo shows, in this order.
TASKS = ("ioi", "years", "induction")
TOP_PATHS = 5
CIRCUIT_THRESHOLD = 0.8
CIRCUIT_ROWS = 12


@click.command("demo", cls=CircuitStoreCommand, context_settings=HELP)
# A smaller server than `server start`'s: the demo's store is a few hundred MB.
@start_options(DEMO_HEAP, DEMO_PAGECACHE, when="When the local server must be started")
@click.option(
    "--no-server",
    is_flag=True,
    help="Start no local server: use the store NEO4J_URI names (the Docker one, for example).",
)
@click.option(
    "--shard",
    default="0/4",
    show_default=True,
    help="I/N: the share of the 800 demo prompts to ingest (0/1: all of them, ~4x as long).",
)
@click.option("--progress/--no-progress", default=None, help="[default: on a terminal only]")
@connection_options
def demo(
    settings: Neo4jSettings,
    home: Path | None,
    bolt_port: int,
    http_port: int,
    heap: str,
    pagecache: str,
    no_server: bool,
    shard: str,
    progress: bool | None,
) -> None:
    """Fill a store with the shipped demo model's graphs and show what it finds.

    Starts the local Neo4j server if it does not run (the password comes from NEO4J_PASSWORD),
    applies the schema, ingests a quarter of the demo corpus (about 200 prompts, a few minutes
    on 2 cores; a rerun resumes and writes nothing twice), then answers: how an indirect-object,
    a year and an induction prompt reach their answers (expected answer beside the logit the
    store reached it through, node ids with their tokens), what drives a feature on those paths
    across the corpus and where it fires; and prints the Neo4j Browser address with a query to
    paste. Needs the ingest extra (pip install 'circuitstore[ingest]').

    \b
    Example:
      export NEO4J_PASSWORD=choose-a-password
      circuitstore demo
    """
    # The ingest side first: without the extra this fails (in one line) before anything starts.
    from circuitstore.ingest.config import IngestConfig
    from circuitstore.ingest.corpus import parse_shard, shard_of
    from circuitstore.ingest.runner import IngestRunner

    index, count = parse_shard(shard)
    password = settings.require_password()
    if no_server:
        browser = None
    else:
        local = ServerSettings(_home(home), bolt_port, http_port, heap, pagecache)
        status = _local_server(local, password, settings)
        settings = settings.model_copy(update={"uri": status.bolt_uri or local.bolt_uri})
        browser = status.browser_url or local.browser_url

    share = "all" if count == 1 else f"shard {index}/{count}"
    with open_driver(settings, retry_seconds=120) as driver:
        state = apply_schema(driver, settings.database)
        ours = sum(row.ours for row in state.rows)
        click.echo(f"schema version {state.version}: {ours} constraints and indexes in place")
        click.echo(
            f"ingesting the demo corpus ({share} of {assets.CORPUS.name}) with the demo model "
            f"and transcoders, as run {RUN!r}..."
        )
        cfg = IngestConfig.from_flat(
            model=str(assets.MODEL),
            transcoders=str(assets.TRANSCODERS),
            prompts=str(assets.CORPUS),
            run=RUN,
            shard_index=index,
            shard_count=count,
            progress=progress,
        )
        summary = IngestRunner(cfg, driver, settings.database, settings.uri).run()
        for line in summary.lines():
            click.echo(f"  {line}")

        rows = shown_prompts(lambda key: shard_of(key, count) == index)
        first = next(iter(rows.values()), None)
        if first is None:
            raise QueryError(f"--shard {shard} holds no prompt of the tasks {', '.join(TASKS)}")
        tset = CircuitStore(driver, settings.database, where=settings.uri).prompt(first["id"])
        store = CircuitStore(driver, settings.database, tset.transcoder_set, settings.uri)
        Questions(store, click.echo).ask(rows)
    _echo_browser(browser, settings, home)
    if summary.failed:  # said in the summary above; the rerun that retries them is this command
        raise SystemExit(1)


def _home(home: Path | None) -> Path:
    return (home or default_home()).expanduser().resolve()


def _local_server(
    local: ServerSettings, password: str, settings: Neo4jSettings
) -> process.ServerStatus:
    """The local server of `local.home`, started unless it runs already."""
    current = process.status(local.home)
    target = current.bolt_uri if current.running else local.bolt_uri
    if settings.uri not in (target, DEFAULT_URI):
        raise ConfigError(
            f"NEO4J_URI names {display_uri(settings.uri)}, but the demo runs on the local "
            f"server ({target}): add --no-server to use the store NEO4J_URI names, or unset it"
        )
    if current.running:
        click.echo(f"local server running (pid {current.pid}) at {current.bolt_uri}")
        return current
    validate_password(password)  # the initial password of a new store: 8 characters or more
    click.echo(f"starting the local server (home {local.home})...")
    started = process.start(
        local, password, SERVER_TIMEOUT, notify=lambda message: click.echo(message, err=True)
    )
    click.echo(f"started (pid {started.status.pid}) in {started.seconds:.1f} s")
    return started.status


def _echo_browser(browser: str | None, settings: Neo4jSettings, home: Path | None) -> None:
    import circuitstore.query

    shipped = Path(circuitstore.query.__file__).parent
    click.echo("")
    if browser:
        click.echo(f"Neo4j Browser: {browser}  (user {settings.username}, your {PASSWORD_ENV})")
    else:
        click.echo(f"Neo4j Browser: the one of {display_uri(settings.uri)}")
    click.echo("Paste, for the strongest corpus-wide drivers of every layer-1 feature:")
    click.echo(f"  {BROWSER_QUERY}")
    click.echo(f"More queries: {shipped / 'cookbook.cypher'}; its style: {shipped / 'style.grass'}")
    if browser:
        where = () if home is None else ("--home", str(home))
        click.echo(f"Stop the server: {command('server', 'stop', *where)[2:]}")


def shown_prompts(in_shard: Callable[[str], bool]) -> dict[str, dict[str, Any]]:
    """The first prompt (by key) of each task in TASKS that the shard holds: corpus rows."""
    found: dict[str, dict[str, Any]] = {}
    with assets.CORPUS.open(encoding="utf-8") as corpus:
        rows = [json.loads(line) for line in corpus if line.strip()]
    for row in sorted(rows, key=lambda r: str(r["id"])):
        task = row.get("task")
        if task in TASKS and task not in found and in_shard(row["id"]):
            found[task] = row
    return {task: found[task] for task in TASKS if task in found}


def command(*args: str) -> str:
    """A command line as a user would type it in bash or zsh (feature names quoted)."""
    return "$ circuitstore " + " ".join(shlex.quote(a) for a in args)


@dataclass(frozen=True)
class Labels:
    """Node ids with their tokens, for people: `embed0@4 ' Kate'`, `logit[458]@14 ' Kate'`,
    `mlp0tc[70]@14 ' to'` (a node at a position shows that position's token; a logit, the token
    it predicts)."""

    prompt: PromptInfo
    nodes: dict[str, Node]
    vocabulary: dict[int, str]

    @classmethod
    def of(cls, prompt: PromptInfo, graph: Subgraph) -> Labels:
        return cls(prompt, {n.id: n for n in graph.nodes}, assets.token_texts())

    def token(self, node_id: str) -> str | None:
        node = self.nodes.get(node_id)
        if node is None:
            return None
        if node.kind == NodeKind.LOGIT and node.token_id is not None:
            return node.token or self.vocabulary.get(node.token_id)
        if node.token is not None:
            return node.token
        if node.pos is not None and 0 <= node.pos < len(self.prompt.tokens):
            return self.prompt.tokens[node.pos]
        return None

    def __call__(self, node_id: str) -> str:
        token = self.token(node_id)
        return node_id if token is None else f"{node_id} {show(token)}"


def show(token: str) -> str:
    """A token in quotes, every control or invisible character escaped (repr's rules)."""
    return repr(token)


@dataclass(frozen=True)
class Expected:
    """What a corpus row says its prompt's answer is, and the earlier token that decides it."""

    task: str
    answer: str
    source: str | None

    @classmethod
    def of(cls, row: dict[str, Any]) -> Expected:
        source = row.get("source")
        return cls(
            str(row["task"]), str(row.get("answer", "")), None if source is None else str(source)
        )

    def describe(self) -> str:
        if self.task == "years" and self.source is not None:
            return (
                f"a two-digit half above {show(self.source)} (the corpus gives {show(self.answer)})"
            )
        return show(self.answer)

    def met_by(self, token: str | None) -> bool:
        """Whether a logit's token is a right answer: any later half for years (the corpus
        names one of them), the answer itself otherwise."""
        if token is None:
            return False
        if self.task == "years" and self.source is not None:
            return len(token) == 2 and token.isdigit() and int(token) > int(self.source)
        return token == self.answer


class Questions:
    """The demo's questions, asked through the Python API and printed for people."""

    def __init__(self, store: CircuitStore, echo: Callable[[str], None]) -> None:
        self.store = store
        self.echo = echo

    def ask(self, rows: dict[str, dict[str, Any]]) -> None:
        features: list[str] = []
        for row in rows.values():
            features += self.prompt(row)
        feature = _deepest(features)
        if feature is not None:
            self.feature(feature)

    def prompt(self, row: dict[str, Any]) -> list[str]:
        """One prompt: its expected answer beside the logit that carries it, and how the store
        reaches that logit. Returns the ids of the features on the way."""
        key, expected = str(row["id"]), Expected.of(row)
        info, graph = self.store.prompt_graph(key)
        labels = Labels.of(info, graph)
        self.echo(f"\n== {TITLES[expected.task]}")
        self.echo(f"prompt {key}: {show(info.text)}")
        source = None
        if expected.source is not None and expected.source in info.tokens:
            source = f"embed0@{info.tokens.index(expected.source)}"
        decided = f", decided by {labels(source)}" if source else ""
        self.echo(f"expected answer: {expected.describe()}{decided}")
        target = self._target(expected, info, graph, labels)
        if expected.task == "years":
            return self._circuit(key, target, source, labels)
        return self._paths(key, target, source, labels)

    def _target(self, expected: Expected, info: PromptInfo, graph: Subgraph, labels: Labels) -> str:
        """The logit to follow: the best-scoring right answer among the stored logits, else the
        top logit. Says which, beside the expected answer."""
        logits = sorted(
            (n for n in graph.nodes if n.kind == NodeKind.LOGIT),
            key=lambda n: -(n.value if n.value is not None else float("-inf")),
        )
        if not logits:
            raise QueryError(f"prompt {info.key} has no stored logit")
        top = logits[0]
        hit = next((n for n in logits if expected.met_by(labels.token(n.id))), None)
        if hit is None:
            shown = ", ".join(labels(n.id) for n in logits)
            self.echo(
                f"the store's logits: {shown}; none is a right answer, so what follows leads "
                "to the top one"
            )
            return top.id
        if hit.id == top.id:
            self.echo(f"reached through {labels(hit.id)}: the model's top logit")
        else:
            rank = logits.index(hit) + 1
            self.echo(
                f"reached through {labels(hit.id)}: logit {rank} of the {len(logits)} stored "
                f"(the top one is {labels(top.id)})"
            )
        return hit.id

    def _paths(self, key: str, target: str, source: str | None, labels: Labels) -> list[str]:
        self.echo(
            command("query", "paths", "--prompt", key, "--to", target, "--top", str(TOP_PATHS))
        )
        found = self.store.paths(key, target, None, TOP_PATHS).paths
        table = [
            {"rank": i + 1, "product": p.product, "path": " -> ".join(map(labels, p.nodes))}
            for i, p in enumerate(found)
        ]
        self.echo(render_table(table, ("rank", "product", "path")))
        on_paths = [p.nodes for p in found]
        if source is not None:
            ranks = [i + 1 for i, p in enumerate(found) if p.nodes[0] == source]
            if ranks:
                which = ", ".join(map(str, ranks))
                self.echo(f"the deciding token {labels(source)} starts path {which}")
            else:
                best = self.store.paths(key, target, source, 1).paths
                if best:
                    path = " -> ".join(map(labels, best[0].nodes))
                    self.echo(
                        f"the strongest path from the deciding token (product "
                        f"{best[0].product:.4g}): {path}"
                    )
                    self.echo(
                        command(
                            "query", "paths", "--prompt", key, "--to", target, "--source", source
                        )
                    )
                    on_paths.append(best[0].nodes)
        return [n for nodes in on_paths for n in nodes if _is_feature(labels.nodes.get(n))]

    def _circuit(self, key: str, target: str, source: str | None, labels: Labels) -> list[str]:
        threshold = str(CIRCUIT_THRESHOLD)
        self.echo(
            command("query", "circuit", "--prompt", key, "--to", target, "--threshold", threshold)
        )
        circuit = self.store.circuit(key, CIRCUIT_THRESHOLD, target)
        nodes = sorted(circuit.subgraph.nodes, key=lambda n: -(n.influence or 0.0))
        table = [
            {
                "node": labels(n.id),
                "kind": n.kind.value,
                "activation": n.activation,
                "influence": n.influence,
            }
            for n in nodes[:CIRCUIT_ROWS]
        ]
        self.echo(render_table(table, ("node", "kind", "activation", "influence")))
        if len(nodes) > CIRCUIT_ROWS:
            self.echo(f"... and {len(nodes) - CIRCUIT_ROWS} more nodes, each with less influence")
        ids = [n.id for n in nodes]
        if source is not None and source in ids:
            rank = ids.index(source) + 1
            self.echo(
                f"the deciding token {labels(source)} is node {rank} of {len(ids)} by influence"
            )
        return [n.id for n in nodes if n.kind == NodeKind.FEATURE]

    def feature(self, name: str) -> None:
        """A feature from the answers' paths: what drives it across the corpus, where it fires."""
        self.echo(
            f"\n== {name} is on those paths. Which earlier features drive it across the corpus?"
        )
        self.echo(command("query", "drivers", name, "--top", "5"))
        links = self.store.drivers(name, top=5).links
        rows = [{"rank": i + 1, **link.as_row()} for i, link in enumerate(links)]
        self.echo(render_table(rows, ("rank", "name", "n", "total", "mean")))
        self.echo(f"\n== Where does {name} fire most?")
        self.echo(command("query", "examples", name, "--top", "5", "--window", "6"))
        examples = self.store.examples(name, top=5, window=6)
        table = [
            {
                "prompt": e.prompt,
                "pos": e.pos,
                "token": show(e.token),
                "activation": e.activation,
                "context": show(e.context),
            }
            for e in examples
        ]
        self.echo(render_table(table, ("prompt", "pos", "token", "activation", "context")))
        self.echo(f"\nMore on it: {command('query', 'feature', name)[2:]}")


TITLES = {
    "ioi": "An indirect-object prompt: which earlier name decides the answer?",
    "years": "A year prompt: which tokens and features carry 80% of the influence on its answer?",
    "induction": "An induction prompt: the word that followed this one the first time",
}


def _is_feature(node: Node | None) -> bool:
    return node is not None and node.kind == NodeKind.FEATURE


def _deepest(node_ids: Iterable[str]) -> str | None:
    """The feature (without its position) of the highest layer among `node_ids`, the most
    frequent among those: its corpus-wide drivers are features of earlier layers."""
    refs = [parse_feature(n) for n in node_ids]
    if not refs:
        return None
    counts: dict[str, tuple[int, int]] = {}
    for ref in refs:
        layer, n = counts.get(ref.base_name, (ref.layer, 0))
        counts[ref.base_name] = (layer, n + 1)
    return max(counts, key=lambda name: (counts[name], name))
