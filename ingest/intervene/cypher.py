"""The write side of `circuitstore verify`: every Cypher statement it runs."""

from __future__ import annotations

from circuitstore.schema.model import Label as L
from circuitstore.schema.model import RelType as R

# One row per intervention, all of a verify run in one transaction. A rerun of the same
# intervention (prompt, features, scale) replaces its properties.
WRITE_INTERVENTIONS = f"""
MATCH (p:{L.PROMPT} {{id: $prompt}})
UNWIND $rows AS r
MERGE (i:{L.INTERVENTION} {{id: r.id}})
SET i = r.props, i.id = r.id
MERGE (i)-[:{R.OF_PROMPT}]->(p)
WITH i, r
UNWIND r.features AS fid
MATCH (f:{L.FEATURE} {{id: fid}})
MERGE (i)-[:{R.ON_FEATURE}]->(f)
"""
