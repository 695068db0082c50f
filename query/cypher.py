"""The store-wide statements of the query side: the transcoder sets, and the prefix that asks
the server how it classes a user's statement. Each question's own statements live beside it
(`features/cypher.py`, `prompts/cypher.py`, `paths/cypher.py`, `heads/cypher.py`,
`labels/cypher.py`, `interventions/cypher.py`).

All are parameterised: labels and relationship types come from `schema.model`, the few pieces a
builder varies come from closed dictionaries, never from user text. Each statement that starts
from a named feature or prompt returns one row per match even when it has no neighbours, so
"unknown" and "no answers" stay distinguishable. Rows come back by name: columns aliased as the
fields of the record they fill, nested rows as maps, never as positions.
"""

from __future__ import annotations

from circuitstore.schema.model import Label as L

# Columns named as `reader.TranscoderSetInfo`'s fields.
TRANSCODER_SETS = f"""
MATCH (s:{L.TRANSCODER_SET})
RETURN s.id AS id, s.nLayers AS n_layers, s.dTranscoder AS d_transcoder, s.model AS model,
       s.transcoders AS transcoders, s.modelHash AS model_hash, s.hash AS transcoders_hash,
       s.nHeads AS n_heads, s.featureFamily AS feature_family, s.modelFamily AS model_family
ORDER BY s.id
"""

# Put in front of a user's statement to learn, without running it, how the server classes it.
EXPLAIN = "EXPLAIN "
