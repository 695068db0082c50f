"""Constraints and indexes, as Cypher constants built only from the closed sets in `model`.

Every statement is idempotent (`IF NOT EXISTS`) and named, so `schema apply` can run any number
of times and `schema show` can tell ours from anything else in the database. Bump
`SCHEMA_VERSION` whenever this list changes in a way old data does not satisfy.
"""

from __future__ import annotations

from dataclasses import dataclass

from circuitstore.schema.model import Label

SCHEMA_VERSION = 1
PREFIX = "cs_"


@dataclass(frozen=True)
class SchemaItem:
    """One constraint or index of the schema, with its Cypher."""

    name: str
    kind: str  # "constraint" or "index"
    cypher: str


def _unique(label: Label, prop: str = "id") -> SchemaItem:
    name = f"{PREFIX}{label.lower()}_{prop}_unique"
    return SchemaItem(
        name,
        "constraint",
        f"CREATE CONSTRAINT {name} IF NOT EXISTS FOR (n:{label}) REQUIRE n.{prop} IS UNIQUE",
    )


def _node_index(label: Label, *props: str) -> SchemaItem:
    name = f"{PREFIX}{label.lower()}_{'_'.join(p.lower() for p in props)}"
    fields = ", ".join(f"n.{p}" for p in props)
    return SchemaItem(
        name, "index", f"CREATE INDEX {name} IF NOT EXISTS FOR (n:{label}) ON ({fields})"
    )


def _fulltext(label: Label, name: str, *props: str) -> SchemaItem:
    fields = ", ".join(f"n.{p}" for p in props)
    return SchemaItem(
        name,
        "index",
        f"CREATE FULLTEXT INDEX {name} IF NOT EXISTS FOR (n:{label}) ON EACH [{fields}]",
    )


# Feature labels (`circuitstore labels import`), searched by `query search`: the label and every
# explanation the source had for the feature. An index only, which any store satisfies, so adding
# it kept SCHEMA_VERSION; `schema apply` adds it to an older store.
FEATURE_LABEL_INDEX = f"{PREFIX}feature_label_fulltext"

SCHEMA_ITEMS: tuple[SchemaItem, ...] = (
    _unique(Label.TRANSCODER_SET),
    _unique(Label.FEATURE),
    _unique(Label.PROMPT),
    _unique(Label.GRAPH_NODE),
    _unique(Label.INGEST_RUN),
    _unique(Label.SCHEMA_VERSION),
    _unique(Label.INTERVENTION),  # a constraint no older store can break: SCHEMA_VERSION kept
    _unique(Label.QK_TRACE),  # likewise (a label no older store holds)
    # Feature names as users write them (mlp8tc[355]) resolve through this index.
    _node_index(Label.FEATURE, "transcoderSet", "layer", "index"),
    # `--prompt KEY` resolves through the user's own key, not the qualified id.
    _node_index(Label.PROMPT, "key"),
    # Per-prompt questions: "what drives mlp8tc[355] in prompt P" and "prompts where X fires".
    _node_index(Label.OCCURRENCE, "prompt", "layer", "feature"),
    _node_index(Label.OCCURRENCE, "transcoderSet", "layer", "feature"),
    _node_index(Label.GRAPH_NODE, "prompt"),
    # A prompt's QK traces (`query qk`), and one head's across the corpus (`query qk-drivers`).
    _node_index(Label.QK_TRACE, "prompt"),
    _node_index(Label.QK_TRACE, "transcoderSet", "layer", "head"),
    _fulltext(Label.FEATURE, FEATURE_LABEL_INDEX, "label", "labels"),
)

SCHEMA_NAMES = frozenset(item.name for item in SCHEMA_ITEMS)

RECORD_VERSION = (
    f"MERGE (v:{Label.SCHEMA_VERSION} {{id: 'circuitstore'}}) "
    "SET v.version = $version, v.appliedAt = datetime()"
)
READ_VERSION = (
    f"MATCH (v:{Label.SCHEMA_VERSION} {{id: 'circuitstore'}}) RETURN v.version AS version"
)
SHOW_CONSTRAINTS = (
    "SHOW CONSTRAINTS YIELD name, type, entityType, labelsOrTypes, properties "
    "RETURN name, 'constraint' AS kind, type, entityType, labelsOrTypes, properties "
    "ORDER BY name"
)
SHOW_INDEXES = (
    "SHOW INDEXES YIELD name, type, entityType, labelsOrTypes, properties, state, owningConstraint "
    "WHERE owningConstraint IS NULL AND type <> 'LOOKUP' "
    "RETURN name, 'index' AS kind, type, entityType, labelsOrTypes, properties, state "
    "ORDER BY name"
)
AWAIT_INDEXES = "CALL db.awaitIndexes($seconds)"
# The cheapest statement a server answers once it serves queries (a start waits for it).
PING = "RETURN 1"
