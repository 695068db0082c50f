"""Every Cypher statement the ingest side runs: constants, parameterised, batched with UNWIND.

Labels and relationship types come from `schema.model` only. A prompt's whole contribution
(its nodes, edges, feature statistics, DRIVES increments and top examples) is written by these
statements inside ONE transaction, so the Prompt node doubles as the "this prompt is in the
aggregates" marker: it exists exactly when its increments were applied.
"""

from __future__ import annotations

from circuitstore.schema.model import Label as L
from circuitstore.schema.model import RelType as R

TRANSCODER_SET_STATE = f"""
MATCH (s:{L.TRANSCODER_SET} {{id: $id}})
RETURN s.graphConfigHash AS graphConfigHash, s.graphConfig AS graphConfig,
       s.featuresComplete AS featuresComplete
"""

MERGE_TRANSCODER_SET = f"""
MERGE (s:{L.TRANSCODER_SET} {{id: $id}})
ON CREATE SET s += $props, s.featuresComplete = false
"""

MARK_FEATURES_COMPLETE = f"MATCH (s:{L.TRANSCODER_SET} {{id: $id}}) SET s.featuresComplete = true"

# Features are created once per transcoder set, with their input-independent views. MERGE keeps
# a restarted creation (killed half-way) from duplicating anything.
MERGE_FEATURES = f"""
UNWIND $rows AS r
MERGE (f:{L.FEATURE} {{id: r.id}})
ON CREATE SET f += r.props, f.nActive = 0, f.nPrompts = 0, f.sumActivation = 0.0,
              f.maxActivation = 0.0, f.topCount = 0, f.topMin = 0.0
"""

# The views are written a layer at a time, each layer in chunks of features; each chunk's
# transaction records it in the set's `viewChunks`, and the layer goes into `viewLayers` after
# its last chunk: every chunk is written exactly once, and a reader knows a layer is complete.
VIEW_LAYERS = f"""
MATCH (s:{L.TRANSCODER_SET} {{id: $id}})
RETURN coalesce(s.viewLayers, []) AS layers
"""

# The same and the chunks written so far, in a write transaction, after taking the set's write
# lock (a write, undone at once): a second writer of the same chunk waits here until the first
# commits, then sees its chunk.
LOCK_VIEWS = f"""
MATCH (s:{L.TRANSCODER_SET} {{id: $id}})
SET s.viewsLock = true
REMOVE s.viewsLock
RETURN coalesce(s.viewLayers, []) AS layers, coalesce(s.viewChunks, []) AS chunks
"""

MARK_VIEW_CHUNK = f"""
MATCH (s:{L.TRANSCODER_SET} {{id: $id}})
SET s.viewChunks = coalesce(s.viewChunks, []) + $chunk
"""

SET_FEATURE_VIEWS = f"""
UNWIND $rows AS r
MATCH (f:{L.FEATURE} {{id: r.id}})
SET f += r.props
"""

# One row per target feature with its sources ([id, weight]): one lookup per target.
CREATE_VIRTUAL_WEIGHTS = f"""
UNWIND $rows AS r
MATCH (t:{L.FEATURE} {{id: r.target}})
UNWIND r.sources AS s
MATCH (f:{L.FEATURE} {{id: s[0]}})
CREATE (f)-[:{R.VIRTUAL_WEIGHT} {{weight: s[1]}}]->(t)
"""

# A layer is complete: recorded in viewLayers, its chunk markers dropped (the property with
# them once none is left: a finished set holds no trace of how its views were written).
MARK_VIEW_LAYER = f"""
MATCH (s:{L.TRANSCODER_SET} {{id: $id}})
WITH s, [c IN coalesce(s.viewChunks, []) WHERE NOT c STARTS WITH $prefix] AS left
SET s.viewLayers = coalesce(s.viewLayers, []) + $layer,
    s.viewChunks = CASE WHEN size(left) > 0 THEN left END
"""

EXISTING_PROMPTS = f"""
UNWIND $ids AS id
MATCH (p:{L.PROMPT} {{id: id}})
RETURN p.id AS id, p.run AS run
"""

CREATE_PROMPT = f"CREATE (p:{L.PROMPT}) SET p = $props"

# Node rows are [label, props]; edges reference nodes by their position in $nodes, so no edge
# needs an index lookup. Edge rows are [source, target, weight, kind] and, where split by head,
# [..., heads, headWeights, otherHeads, residual]: an index past a list's end reads null, and a
# null property is not stored. The final check proves collect() kept UNWIND's order.
CREATE_GRAPH = f"""
UNWIND $nodes AS n
CREATE (g:{L.GRAPH_NODE}:$(n[0]))
SET g = n[1]
WITH collect(g) AS created
CALL (created) {{
  UNWIND $edges AS e
  WITH created[e[0]] AS a, created[e[1]] AS b, e
  CREATE (a)-[:{R.ATTR} {{weight: e[2], kind: e[3], heads: e[4], headWeights: e[5],
                          otherHeads: e[6], residual: e[7]}}]->(b)
}}
RETURN size(created) AS nodes,
       all(i IN range(0, size(created) - 1) WHERE created[i].id = $nodes[i][1].id) AS ordered
"""

UPDATE_FEATURE_STATS = f"""
UNWIND $rows AS r
MATCH (f:{L.FEATURE} {{id: r.id}})
SET f.nActive = f.nActive + r.n,
    f.nPrompts = f.nPrompts + 1,
    f.sumActivation = f.sumActivation + r.sum,
    f.maxActivation = CASE WHEN r.max > f.maxActivation THEN r.max ELSE f.maxActivation END
"""

# MERGE of a relationship between two bound nodes locks both nodes first, so concurrent shard
# writers cannot both create the same DRIVES; rows arrive sorted to keep lock order stable.
MERGE_DRIVES = f"""
UNWIND $rows AS r
MATCH (s:{L.FEATURE} {{id: r.s}})
MATCH (t:{L.FEATURE} {{id: r.t}})
MERGE (s)-[d:{R.DRIVES}]->(t)
ON CREATE SET d.n = r.n, d.sum = r.sum, d.sumAbs = r.sumAbs, d.maxAbs = r.maxAbs
ON MATCH SET d.n = d.n + r.n, d.sum = d.sum + r.sum, d.sumAbs = d.sumAbs + r.sumAbs,
             d.maxAbs = CASE WHEN r.maxAbs > d.maxAbs THEN r.maxAbs ELSE d.maxAbs END
"""

# Keep each feature's k best prompts. Ties are broken by prompt id so that the set kept does not
# depend on the order in which prompts were written (shards, resumes).
UPDATE_TOP_EXAMPLES = f"""
UNWIND $rows AS r
MATCH (f:{L.FEATURE} {{id: r.id}})
WHERE f.topCount < $k OR r.activation >= f.topMin
MATCH (p:{L.PROMPT} {{id: $prompt}})
CREATE (f)-[:{R.TOP_EXAMPLE} {{activation: r.activation, pos: r.pos, prompt: $prompt}}]->(p)
WITH DISTINCT f
CALL (f) {{
  MATCH (f)-[t:{R.TOP_EXAMPLE}]->()
  WITH t ORDER BY t.activation DESC, t.prompt ASC
  SKIP $k
  DELETE t
}}
CALL (f) {{
  MATCH (f)-[t:{R.TOP_EXAMPLE}]->()
  WITH f, count(t) AS c, min(t.activation) AS m
  SET f.topCount = c, f.topMin = m
}}
"""

# Server settings by name ($names), e.g. what the server lets one transaction hold.
SETTINGS = """
SHOW SETTINGS YIELD name, value
WHERE name IN $names
RETURN name, value
"""
