"""The statements only the benchmarks run: the bare write loop the ingest path is compared with
(the same nodes and relationships, no bookkeeping, id lookups for every edge)."""

from __future__ import annotations

from circuitstore.schema.model import Label as L
from circuitstore.schema.model import RelType as R

BARE_CREATE_NODES = f"UNWIND $nodes AS n CREATE (g:{L.GRAPH_NODE}:{L.OCCURRENCE}) SET g = n[1]"

BARE_CREATE_EDGES = f"""
UNWIND $edges AS e
MATCH (a:{L.GRAPH_NODE} {{id: e[0]}})
MATCH (b:{L.GRAPH_NODE} {{id: e[1]}})
CREATE (a)-[:{R.ATTR} {{weight: e[2], kind: e[3]}}]->(b)
"""

# Between measurements: every node of a label, or every node, in batches. Labels are spelled
# out: on Neo4j 5.26 a dynamic label ($(...)) cannot use the label index.
WIPE_GRAPH_NODES = (
    f"MATCH (n:{L.GRAPH_NODE}) CALL (n) {{ DETACH DELETE n }} IN TRANSACTIONS OF 5000 ROWS"
)
WIPE_PROMPTS = f"MATCH (n:{L.PROMPT}) CALL (n) {{ DETACH DELETE n }} IN TRANSACTIONS OF 5000 ROWS"
WIPE_ALL = "MATCH (n) CALL (n) { DETACH DELETE n } IN TRANSACTIONS OF 5000 ROWS"

# What a store holds, for the capacity benchmark: prompts and their tokens, graph nodes, and the
# relationships by type (per-prompt ATTR, corpus DRIVES, the rest).
CAPACITY_COUNTS = f"""
CALL () {{ MATCH (p:{L.PROMPT}) RETURN count(p) AS prompts, coalesce(sum(p.nTokens), 0) AS tokens }}
CALL () {{ MATCH (n:{L.GRAPH_NODE}) RETURN count(n) AS nodes }}
CALL () {{ MATCH ()-[r:{R.ATTR}]->() RETURN count(r) AS attr }}
CALL () {{ MATCH ()-[r:{R.DRIVES}]->() RETURN count(r) AS drives }}
CALL () {{ MATCH ()-[r]->() RETURN count(r) AS rels }}
RETURN prompts, tokens, nodes, attr, drives, rels - attr - drives AS other
"""

# The heads benchmark's candidate encodings of an edge's split by head: 1,000 graph nodes, then
# ATTR relationships between them with each encoding's properties.
ENCODING_NODES = f"UNWIND range(0, 999) AS i CREATE (:{L.GRAPH_NODE} {{id: toString(i)}})"
_ENCODING_EDGES = f"""
UNWIND $rows AS r
MATCH (a:{L.GRAPH_NODE} {{id: toString(r.i % 1000)}})
MATCH (b:{L.GRAPH_NODE} {{id: toString((r.i + 1) % 1000)}})
CREATE (a)-[:{R.ATTR} {{weight: r.weight, kind: 'attention'{{props}}}}]->(b)
"""
ENCODINGS = {
    name: _ENCODING_EDGES.replace("{props}", props)
    for name, props in {
        "weight and kind only": "",
        "names (string array) + weights (float array) + rest": (
            ", heads: r.names, headWeights: r.weights, otherHeads: r.other"
        ),
        "numbers (int array) + weights (float array) + rest": (
            ", heads: r.numbers, headWeights: r.weights, otherHeads: r.other"
        ),
        "numbers (int array) + 3 float properties + rest": (
            ", heads: r.numbers, head1: r.weights[0], head2: r.weights[1],"
            " head3: r.weights[2], otherHeads: r.other"
        ),
    }.items()
}

# The load benchmark's comparison of the store a transactional ingest built with the one `load`
# built from the same rows: counts per kind, and sums that the corpus aggregates carry.
LOAD_COUNTS = f"""
CALL () {{ MATCH (p:{L.PROMPT}) RETURN count(p) AS prompts }}
CALL () {{ MATCH (n:{L.GRAPH_NODE}) RETURN count(n) AS graphNodes }}
CALL () {{ MATCH ()-[r:{R.ATTR}]->() RETURN count(r) AS attr }}
CALL () {{ MATCH ()-[r:{R.DRIVES}]->() RETURN count(r) AS drives, sum(r.n) AS drivesN }}
CALL () {{ MATCH ()-[r:{R.TOP_EXAMPLE}]->() RETURN count(r) AS top }}
CALL () {{ MATCH ()-[r]->() RETURN count(r) AS relationships }}
CALL () {{
  MATCH (f:{L.FEATURE})
  RETURN count(f) AS features, sum(f.nActive) AS nActive, sum(f.nPrompts) AS nPrompts,
         sum(f.topCount) AS topCount
}}
RETURN prompts, graphNodes, attr, drives, drivesN, top, relationships, features, nActive,
       nPrompts, topCount
"""
