"""Every Cypher statement the query side runs: constants and small builders, all parameterised.

Labels and relationship types come from `schema.model`; the few pieces a builder varies (the
direction of a hop, the ranking expression) come from the closed dictionaries below, never from
user text. Each statement that starts from a named feature or prompt returns one row per match
even when it has no neighbours, so "unknown" and "no answers" stay distinguishable.
"""

from __future__ import annotations

from functools import cache

from circuitstore.schema.model import Label as L
from circuitstore.schema.model import RelType as R

TRANSCODER_SETS = f"""
MATCH (s:{L.TRANSCODER_SET})
RETURN s.id AS id, s.nLayers AS nLayers, s.dTranscoder AS dTranscoder, s.model AS model,
       s.transcoders AS transcoders, s.modelHash AS modelHash, s.hash AS hash,
       s.nHeads AS nHeads
ORDER BY s.id
"""

# A prompt by the user's key (optionally within one transcoder set), or by its full id.
PROMPT = f"""
CALL () {{
  MATCH (p:{L.PROMPT} {{key: $key}}) RETURN p
  UNION
  MATCH (p:{L.PROMPT} {{id: $key}}) RETURN p
}}
WITH p WHERE $tset IS NULL OR p.transcoderSet = $tset
RETURN p.id AS id, p.key AS key, p.transcoderSet AS transcoderSet, p.text AS text,
       p.tokens AS tokens, p.tokenIds AS tokenIds, p.nTokens AS nTokens, properties(p) AS props
LIMIT 5
"""

FEATURES = f"""
UNWIND $ids AS id
OPTIONAL MATCH (f:{L.FEATURE} {{id: id}})
RETURN id, f IS NOT NULL AS found, f.nPrompts AS nPrompts
"""

# Ranking of DRIVES neighbours: the score, which rows qualify, and the sort key.
SCORES = {"total": "d.sum", "mean": "d.sum / d.n"}
SIGN_FILTERS = {"positive": "score > 0", "negative": "score < 0", "abs": "true"}
SIGN_ORDERS = {"positive": "score DESC", "negative": "score ASC", "abs": "abs(score) DESC"}
HOPS = {"drivers": "<-[d:{rel}]-", "targets": "-[d:{rel}]->"}


@cache
def corpus_links(direction: str, order: str, sign: str) -> str:
    """One hop over DRIVES from a global feature, ranked; one row even with no neighbours."""
    hop = HOPS[direction].format(rel=R.DRIVES)
    return f"""
MATCH (f:{L.FEATURE} {{id: $id}})
RETURN COLLECT {{
  MATCH (f){hop}(o:{L.FEATURE})
  WITH o, d, {SCORES[order]} AS score
  WHERE {SIGN_FILTERS[sign]}
  WITH o, d, score ORDER BY {SIGN_ORDERS[sign]} LIMIT $top
  RETURN [o.layer, o.index, d.n, d.sum, d.sumAbs, d.maxAbs, o.label]
}} AS rows
"""


PROMPT_HOPS = {"drivers": "<-[a:{rel}]-", "targets": "-[a:{rel}]->"}


@cache
def prompt_links(direction: str) -> str:
    """A feature's occurrences in one prompt (at one position where given), each with its ATTR
    edges in one direction."""
    hop = PROMPT_HOPS[direction].format(rel=R.ATTR)
    return f"""
MATCH (o:{L.OCCURRENCE} {{prompt: $prompt, layer: $layer, feature: $index}})
WHERE $pos IS NULL OR o.pos = $pos
RETURN o.localId AS id, o.pos AS pos, o.activation AS activation,
       COLLECT {{
         MATCH (o){hop}(x:{L.GRAPH_NODE})
         RETURN [x.localId, x.kind, x.layer, x.pos, a.weight, a.kind, x.feature, x.tokenId, x.token,
                 a.heads, a.headWeights, a.otherHeads, a.residual]
       }} AS edges
ORDER BY o.pos
"""


# The attention heads named on one prompt's stored edges (each edge names its strongest few),
# with the weight they carry there, and the edges' absolute sums of their other heads, in one
# pass over the edges.
PROMPT_HEADS = f"""
MATCH (:{L.GRAPH_NODE} {{prompt: $prompt}})-[a:{R.ATTR}]->()
WHERE a.heads IS NOT NULL
WITH collect(a) AS split, sum(abs(a.otherHeads)) AS other
UNWIND split AS a
UNWIND range(0, size(a.heads) - 1) AS i
WITH other, a.heads[i] AS head, a.headWeights[i] AS w
RETURN head, count(*) AS edges, sum(w) AS total, sum(abs(w)) AS sumAbs, other
ORDER BY sumAbs DESC, head
"""

# Where a feature fires most, with a window of tokens around the position.
EXAMPLES = f"""
MATCH (f:{L.FEATURE} {{id: $id}})
RETURN COLLECT {{
  MATCH (f)-[t:{R.TOP_EXAMPLE}]->(p:{L.PROMPT})
  WITH p, t ORDER BY t.activation DESC, p.key LIMIT $top
  WITH p, t, CASE WHEN t.pos < $window THEN 0 ELSE t.pos - $window END AS start
  RETURN [p.key, t.pos, t.activation, start, p.tokens[start .. t.pos + $window + 1]]
}} AS rows
"""

FEATURE_CARD = f"""
MATCH (f:{L.FEATURE} {{id: $id}})
RETURN properties(f) AS props,
  COLLECT {{
    MATCH (f)<-[v:{R.VIRTUAL_WEIGHT}]-(o:{L.FEATURE})
    WITH o, v ORDER BY abs(v.weight) DESC, o.layer, o.index LIMIT $top
    RETURN [o.layer, o.index, v.weight, o.label]
  }} AS virtualIn,
  COLLECT {{
    MATCH (f)-[v:{R.VIRTUAL_WEIGHT}]->(o:{L.FEATURE})
    WITH o, v ORDER BY abs(v.weight) DESC, o.layer, o.index LIMIT $top
    RETURN [o.layer, o.index, v.weight, o.label]
  }} AS virtualOut
"""

# One prompt's whole stored graph in one round trip: its nodes, each with its incoming edges.
PROMPT_GRAPH = f"""
MATCH (n:{L.GRAPH_NODE} {{prompt: $prompt}})
RETURN n.localId AS id, n.kind AS kind, n.layer AS layer, n.pos AS pos, n.feature AS feature,
       n.activation AS activation, n.token AS token, n.tokenId AS tokenId, n.value AS value,
       COLLECT {{
         MATCH (s:{L.GRAPH_NODE})-[a:{R.ATTR}]->(n) RETURN [s.localId, a.weight, a.kind]
       }} AS inputs
"""

# Prompts where every feature occurs, scored by the summed peak activations. One pass over the
# rarest feature ($first) through the Occurrence(transcoderSet, layer, feature) index gives its
# prompts with its positions and peak; per prompt, each other feature ($rest) is looked up once
# through Occurrence(prompt, layer, feature), reading its positions and peak in the same seek (no
# separate existence check), and the prompt is kept when all of them were found. Only the `$top`
# best prompts are then joined to :Prompt.
PROMPTS_WITH = f"""
MATCH (o:{L.OCCURRENCE} {{transcoderSet: $tset, layer: $first.layer, feature: $first.index}})
WITH o.prompt AS pid, collect(o.pos) AS head, max(o.activation) AS peak
CALL (pid) {{
  UNWIND $rest AS f
  MATCH (x:{L.OCCURRENCE} {{prompt: pid, layer: f.layer, feature: f.index}})
  WITH f, collect(x.pos) AS positions, max(x.activation) AS peak
  RETURN collect([f.name, positions]) AS tail, sum(peak) AS more, count(*) AS found
}}
WITH pid, head, tail, peak + more AS score WHERE found = size($rest)
ORDER BY score DESC, pid LIMIT $top
MATCH (p:{L.PROMPT} {{id: pid}})
RETURN p.key AS key, p.text AS text, score, [[$first.name, head]] + tail AS positions
ORDER BY score DESC, key
"""

# The labels of the labelled features among $ids (global Feature ids).
FEATURE_LABELS = f"""
UNWIND $ids AS id
MATCH (f:{L.FEATURE} {{id: id}})
WHERE f.label IS NOT NULL
RETURN f.id AS id, f.label AS label
"""

# The stored prompts of one transcoder set (or all), by key, without their graphs: the corpus's
# own fields come back in `props`, the tokens left out.
# $order: null (by key), or a score's property (schema.model.PromptScore) to sort by, best
# first unless $ascending, and to filter by ($min, $max; prompts without the score are left out
# then). A prompt without the score sorts last either way (null negated is null).
PROMPTS = f"""
MATCH (p:{L.PROMPT})
WHERE $tset IS NULL OR p.transcoderSet = $tset
WITH p, CASE WHEN $order IS NULL THEN null ELSE p[$order] END AS score
WHERE ($min IS NULL OR score >= $min) AND ($max IS NULL OR score <= $max)
WITH p, CASE WHEN $ascending THEN score ELSE -score END AS rank
ORDER BY rank, p.key SKIP $skip LIMIT $limit
RETURN p.key AS key, p.transcoderSet AS transcoderSet, p.text AS text, p.nTokens AS nTokens,
       properties(p) AS props
"""

# Features by label: the full-text index ($index, schema.ddl's) over Feature.label and .labels,
# best first, within one transcoder set.
SEARCH_LABELS = f"""
CALL db.index.fulltext.queryNodes($index, $text) YIELD node, score
WITH node AS f, score WHERE f:{L.FEATURE} AND f.transcoderSet = $tset
RETURN f.layer AS layer, f.index AS index, score, f.label AS label, f.labels AS labels,
       f.labelSource AS source, f.labelExplainer AS explainer
ORDER BY score DESC, layer, index LIMIT $top
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

# Put in front of a user's statement to learn, without running it, how the server classes it.
EXPLAIN = "EXPLAIN "
