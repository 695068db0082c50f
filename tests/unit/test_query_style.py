"""query/style.grass, read the way the Neo4j Browser (5.x) reads a `:style` command or a dropped
.grass file: braces open and close a rule unless inside quotes, `"` and `'` toggle quoting and are
dropped, declarations split on `;` and then on `:` (exactly two parts, else dropped silently).

A rule with an empty selector (what any `}` outside a rule makes, e.g. the one the Browser's
editor adds when the style is typed instead of pasted) crashes every graph view with "Cannot
read properties of undefined (reading 'replace')" and is saved in localStorage until
`:style reset`; so the file must parse into well-formed rules only.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from circuitstore.schema.model import Label, RelType

STYLE = Path(__file__).parents[2] / "query" / "style.grass"

# The keys of the Browser's own default style and its pickers; anything else is ignored there.
KEYS = {
    "diameter",
    "color",
    "border-color",
    "border-width",
    "text-color-internal",
    "text-color-external",
    "font-size",
    "caption",
    "shaft-width",
    "padding",
}
CAPTIONS = {  # what ingest writes on each kind (see ingest/payload.py)
    "node.GraphNode": "{localId}",
    "node.Occurrence": "{localId}",
    "node.Embedding": "{localId}",
    "node.ErrorTerm": "{localId}",
    "node.Bias": "{localId}",
    "node.Logit": "{localId}",
    "node.Feature": "{name}",
    "node.Prompt": "{key}",
    "node.TranscoderSet": "{id}",
    "relationship.ATTR": "{weight}",
    "relationship.DRIVES": "{sum}",
    "relationship.TOP_EXAMPLE": "{activation}",
    "relationship.VIRTUAL_WEIGHT": "{weight}",
}


def browser_parse(text: str) -> dict[str, dict[str, str]]:
    rules: dict[str, str] = {}
    quoted = inside = nested = False
    selector = body = ""
    for c in text:
        if c in "'\"":
            quoted = not quoted
            continue
        if c == "{" and not quoted:
            nested, inside = (True, inside) if inside else (nested, True)
            continue
        if c == "}" and not quoted:
            if nested:
                nested = False
            else:
                rules[selector], inside, selector, body = body, False, "", ""
            continue
        if inside:
            body += c
        elif not c.isspace():
            selector += c
    parsed: dict[str, dict[str, str]] = {}
    for sel, decls in rules.items():
        parsed[sel] = {}
        for decl in decls.split(";"):
            parts = decl.split(":")
            if len(parts) == 2:
                parsed[sel][parts[0].strip()] = parts[1].strip()
    return parsed


def test_parser_reproduces_the_crash_case():
    typed = "node {\n  diameter: 50px;\n}\n}"  # what typing leaves: the auto-closed brace
    assert "" in browser_parse(typed)


def test_every_rule_has_a_selector_the_browser_understands():
    rules = browser_parse(STYLE.read_text())
    labels, types = {str(x) for x in Label}, {str(x) for x in RelType}
    assert "node" in rules
    assert "relationship" in rules
    for selector in rules:
        tag, *classes = selector.split(".")
        assert tag in ("node", "relationship"), selector
        assert set(classes) <= (labels if tag == "node" else types), selector


def test_no_declaration_is_lost():
    text = STYLE.read_text()
    declared = len(re.findall(r"^\s+[\w-]+:\s*\S.*;\s*$", text, flags=re.M))
    rules = browser_parse(text)
    assert sum(len(props) for props in rules.values()) == declared
    assert text.count("{") - text.count('"{') == text.count("}") - text.count('}"')


@pytest.mark.parametrize("selector", sorted(CAPTIONS))
def test_captions_name_stored_properties(selector):
    rules = browser_parse(STYLE.read_text())
    assert rules[selector]["caption"] == CAPTIONS[selector]
    assert set(rules[selector]) <= KEYS
    for key in ("diameter", "font-size", "shaft-width"):
        if key in rules[selector]:
            assert re.fullmatch(r"\d+px", rules[selector][key])
