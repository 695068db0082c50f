"""Answers a person can read, without a database: tables stay aligned on screen whatever the
token text (controls, undecodable bytes, wide and combining characters, `<|endoftext|>` or
not), nodes are shown with their tokens, and every answer converts to a DataFrame and networkx."""

from __future__ import annotations

import unicodedata

import networkx as nx
import pandas as pd
import pytest

from circuitstore.clitools import display_width, printable, render_table
from circuitstore.query.results import (
    CircuitResult,
    Edge,
    Example,
    FeatureCard,
    LabelInfo,
    Link,
    Neighbours,
    Node,
    Path,
    PathsResult,
    PromptInfo,
    Records,
    Subgraph,
)
from circuitstore.render import EXAMPLE_COLUMNS, EXAMPLE_RIGHT, card_table, example_rows

NASTY = [
    "<|endoftext|>",
    " Kate",
    "\n\n",
    "\x1b[31m",
    "\udcff\udcfe",  # bytes that were not UTF-8, as surrogateescape decodes them
    "\ufffd",  # or as the tokenizer's replacement character
    " 字字",
    "e\u0301",
    "\u200b",
    "\u202eevil",
    "\t",
    "",
]


def screen_width(line: str) -> int:
    """An independent reading of the columns a terminal gives `line`."""
    return sum(
        0 if unicodedata.combining(c) else 2 if unicodedata.east_asian_width(c) in "WF" else 1
        for c in line
    )


def column_starts(line: str, header: str, names: list[str]) -> list[int]:
    """Screen columns at which each header name starts, read off the header line."""
    return [screen_width(header[: header.index(n)]) for n in names]


@pytest.mark.parametrize("token", NASTY)
def test_printable_output_is_safe(token):
    shown = printable(token)
    shown.encode("utf-8")  # writable to a terminal
    assert not any(unicodedata.category(c) in ("Cc", "Cf", "Cs", "Zl", "Zp") for c in shown)


def test_table_columns_stay_aligned_whatever_the_text():
    rows = [{"name": t, "value": i, "after": "|"} for i, t in enumerate(NASTY)]
    table = render_table(rows, ("name", "value", "after"))
    lines = table.splitlines()
    header = lines[0]
    start = column_starts(header, header, ["after"])[0]
    for line in lines[2:]:
        before = line[: line.rindex("|")]
        assert screen_width(before) == start, line


def test_display_width():
    assert display_width("abc") == 3
    assert display_width("字字") == 4
    assert display_width("e\u0301") == 1


def test_examples_put_the_token_in_one_column():
    examples = [
        Example("a", 3, " went", 2.0, ("<|endoftext|>", "When", " Mary"), (" to", " the")),
        Example("b", 12, " went", 1.5, (" and", " John"), (" to",)),
        Example("c", 9, "\n", 1.0, (" 字", "\x1b"), ("x",)),
    ]
    table = render_table(example_rows(examples), EXAMPLE_COLUMNS, EXAMPLE_RIGHT)
    lines = table.splitlines()
    starts = {screen_width(line[: line.index("[[")]) for line in lines[2:]}
    assert len(starts) == 1, table
    assert "\x1b" not in table


def graph() -> Subgraph:
    nodes = (
        Node("embed0@1", "embedding", pos=1, token=" Kate", token_id=458),
        Node("mlp0tc[70]@2", "feature", layer=0, pos=2, feature=70, token=" to", label="names"),
        Node("logit[458]@2", "logit", pos=2, token=" Kate", token_id=458, value=3.0),
    )
    edges = (
        Edge("embed0@1", "mlp0tc[70]@2", 0.5, "attention"),
        Edge("mlp0tc[70]@2", "logit[458]@2", 2.0, "residual"),
    )
    return Subgraph("p", nodes, edges)


def test_nodes_are_shown_with_their_tokens():
    shown = {n.id: n.shown for n in graph().nodes}
    assert shown == {
        "embed0@1": "embed0@1 ' Kate'",
        "mlp0tc[70]@2": "mlp0tc[70]@2 ' to'",
        "logit[458]@2": "logit[458]@2 ' Kate'",
    }
    paths = PathsResult(
        "p",
        "logit[458]@2",
        (Path(("embed0@1", "mlp0tc[70]@2", "logit[458]@2"), (0.5, 2.0)),),
        graph(),
    )
    (row,) = paths.rows()
    assert row["path"] == "embed0@1 -> mlp0tc[70]@2 -> logit[458]@2"
    assert row["path_tokens"] == "embed0@1 ' Kate' -> mlp0tc[70]@2 ' to' -> logit[458]@2 ' Kate'"
    assert row["labels"] == "mlp0tc[70]: names"


def test_every_answer_converts_to_pandas_and_networkx():
    sub = graph()
    link = Link("mlp0tc[70]@2", "feature", 0, 2, 1, 2.0, 2.0, 2.0, 2.0, token=" to", label="x")
    answers = {
        "neighbours": Neighbours("mlp1tc[3]", "drivers", "p", (link,), sub),
        "paths": PathsResult("p", "logit[458]@2", (Path(("a", "b"), (1.0,)),), sub),
        "circuit": CircuitResult("p", ("logit[458]@2",), 0.8, sub),
        "subgraph": sub,
        "examples": Records([Example("a", 1, " x", 1.0, (), ())]),
        "prompt": PromptInfo("s/p", "p", "s", "a b", ("a", " b"), (1, 2)),
        "card": FeatureCard(
            "mlp0tc[70]",
            "s/0/70",
            {"nActive": 1},
            None,
            None,
            (),
            (),
            (link,),
            (),
            (),
            label=LabelInfo("names", "neuronpedia:gpt2-small/0-tres-dc", "gpt-4o-mini"),
        ),
    }
    for name, answer in answers.items():
        frame = answer.to_pandas()
        assert isinstance(frame, pd.DataFrame), name
        assert len(frame) == len(answer.rows()), name
    assert list(answers["subgraph"].to_pandas("edges").columns[:3]) == [
        "source",
        "target",
        "weight",
    ]
    assert answers["neighbours"].to_pandas()["label"].tolist() == ["x"]
    assert list(Records((), ("prompt", "pos")).to_pandas().columns) == ["prompt", "pos"]
    for name in ("neighbours", "paths", "circuit"):
        g = answers[name].to_networkx()
        assert isinstance(g, nx.DiGraph)
        assert g.nodes["mlp0tc[70]@2"]["token"] == " to"
    with pytest.raises(Exception, match="corpus-wide answer has no subgraph"):
        Neighbours("mlp1tc[3]", "drivers", None, (link,)).to_networkx()


def test_card_shows_the_label_and_its_provenance():
    link = Link("mlp0tc[1]", "feature", 0, None, 3, 1.0, 0.3, 1.0, 0.5, label="years")
    card = FeatureCard(
        "mlp1tc[2]",
        "s/1/2",
        {"nActive": 1},
        None,
        None,
        (("mlp0tc[1]", 0.5),),
        (),
        (link,),
        (),
        (),
        label=LabelInfo("names", "neuronpedia:gpt2-small/1-tres-dc", "gpt-4o-mini", score=0.5),
        neighbour_labels={"mlp0tc[1]": "years"},
    )
    text = card_table(card)
    assert "label: names" in text
    assert "source neuronpedia:gpt2-small/1-tres-dc, explainer gpt-4o-mini, score 0.5" in text
    assert text.count("years") == 2
    assert card.rows()[0] == {
        "section": "label",
        "name": "source neuronpedia:gpt2-small/1-tres-dc, explainer gpt-4o-mini, score 0.5",
        "value": "names",
    }


def test_card_tokens_read_as_text_and_say_when_they_are_not():
    """Logit-lens tokens are quoted so that spaces show; a control byte is escaped and marked
    not printable, a lone byte of a multi-byte character is marked as such."""
    tokens = (" Kate", "\x05", "\ufffd", "?", "")
    card = FeatureCard("mlp0tc[1]", "s/0/1", {}, None, tokens, (), (), (), (), ())
    line = next(x for x in card_table(card).splitlines() if x.startswith("logit-lens tokens:"))
    assert line == (
        "logit-lens tokens: ' Kate' | '\\x05' (not printable) | "
        "'\ufffd' (a byte that is not UTF-8 alone) | '?' | '' (empty)"
    )
    assert "\x05" not in card_table(card)
