"""The labels question's statements (see `query/cypher.py` for the rules they follow)."""

from __future__ import annotations

from circuitstore.schema.model import Label as L

# The labels of the labelled features among $ids (global Feature ids).
FEATURE_LABELS = f"""
UNWIND $ids AS id
MATCH (f:{L.FEATURE} {{id: id}})
WHERE f.label IS NOT NULL
RETURN f.id AS id, f.label AS label
"""

# Features by label: the full-text index ($index, schema.ddl's) over Feature.label and .labels,
# best first, within one transcoder set. Columns named as `records.LabelMatch`'s fields.
SEARCH_LABELS = f"""
CALL db.index.fulltext.queryNodes($index, $text) YIELD node, score
WITH node AS f, score WHERE f:{L.FEATURE} AND f.transcoderSet = $tset
RETURN f.layer AS layer, f.index AS index, score, f.label AS label,
       f.labelSource AS source, f.labelExplainer AS explainer
ORDER BY score DESC, layer, index LIMIT $top
"""

# Label import: those of $ids that name a Feature.
STORED_FEATURES = f"""
UNWIND $ids AS id
MATCH (f:{L.FEATURE} {{id: id}})
RETURN id
"""

# Label import: the first of $ids that names no Feature (none: every label has its feature).
MISSING_FEATURE = f"""
UNWIND range(0, size($ids) - 1) AS i
WITH i WHERE NOT EXISTS {{ MATCH (f:{L.FEATURE} {{id: $ids[i]}}) }}
RETURN i ORDER BY i LIMIT 1
"""

# Label import: one batch of labels, each row a feature's whole label (its text, provenance and
# every explanation the source has for it), set absolutely so that a batch written twice leaves
# the same store; a null score or explainer removes an earlier one.
SET_LABELS = f"""
UNWIND $rows AS r
MATCH (f:{L.FEATURE} {{id: r.id}})
SET f.label = r.label, f.labels = r.labels, f.labelSource = r.source,
    f.labelExplainer = r.explainer, f.labelType = r.type, f.labelScore = r.score,
    f.labelId = r.labelId
RETURN count(f) AS n
"""
