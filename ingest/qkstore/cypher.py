"""The write side of QK traces: every Cypher statement it runs."""

from __future__ import annotations

from circuitstore.schema.model import Label as L
from circuitstore.schema.model import RelType as R

# One row per trace, all of a prompt's in one transaction. A trace's id hashes (prompt, head,
# positions, mode), so a rerun replaces its properties and its links to the graph; the links
# go to the kept marginal contributors that are nodes of the prompt's stored graph (the rest
# are only in the trace's lists).
WRITE_QK_TRACES = f"""
MATCH (p:{L.PROMPT} {{id: $prompt}})
UNWIND $rows AS r
MERGE (t:{L.QK_TRACE} {{id: r.id}})
SET t = r.props, t.id = r.id
MERGE (t)-[:{R.OF_PROMPT}]->(p)
WITH t, r
CALL (t) {{
  MATCH (t)-[old:{R.QK_QUERY}|{R.QK_KEY}]->()
  DELETE old
}}
CALL (t, r) {{
  UNWIND r.query AS c
  MATCH (n:{L.GRAPH_NODE} {{id: c.node}})
  CREATE (t)-[:{R.QK_QUERY} {{value: c.value, rank: c.rank}}]->(n)
}}
CALL (t, r) {{
  UNWIND r.key AS c
  MATCH (n:{L.GRAPH_NODE} {{id: c.node}})
  CREATE (t)-[:{R.QK_KEY} {{value: c.value, rank: c.rank}}]->(n)
}}
"""
