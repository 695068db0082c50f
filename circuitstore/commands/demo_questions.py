"""What `circuitstore demo` asks its store, and how it prints the answers for people: each
answer with the `circuitstore query` command that asks it, node ids with their tokens, and each
prompt's expected answer beside the logit the store reached it through."""

from __future__ import annotations

import shlex
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from circuitstore import demo as assets
from circuitstore.clitools import render_table
from circuitstore.query import CircuitStore
from circuitstore.query.results import Node, PromptInfo, Subgraph
from circuitstore.query.tables import node_text, token_text
from circuitstore.schema.errors import QueryError
from circuitstore.schema.names import NodeKind, parse_feature

TOP_PATHS = 5
CIRCUIT_THRESHOLD = 0.8
CIRCUIT_ROWS = 12


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
        return node_text(node_id, self.token(node_id))


def show(token: str) -> str:
    """A token in quotes, every control or invisible character escaped (repr's rules)."""
    return token_text(token)


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
