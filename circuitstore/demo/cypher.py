"""The statement `circuitstore demo` suggests pasting into the Neo4j Browser (it never runs it)."""

from __future__ import annotations

from circuitstore.schema.model import Label as L
from circuitstore.schema.model import RelType as R

# The strongest corpus-wide drivers of every layer-1 feature, as a table.
BROWSER_QUERY = (
    f"MATCH (s:{L.FEATURE})-[d:{R.DRIVES}]->(t:{L.FEATURE} {{layer: 1}}) "
    "RETURN s.name, t.name, d.sum, d.n ORDER BY abs(d.sum) DESC LIMIT 25"
)
