"""The prompts question's statements (see `query/cypher.py` for the rules they follow)."""

from __future__ import annotations

from circuitstore.schema.model import Label as L

# A prompt by the user's key (optionally within one transcoder set), or by its full id.
PROMPT = f"""
CALL () {{
  MATCH (p:{L.PROMPT} {{key: $key}}) RETURN p
  UNION
  MATCH (p:{L.PROMPT} {{id: $key}}) RETURN p
}}
WITH p WHERE $tset IS NULL OR p.transcoderSet = $tset
RETURN p.id AS id, p.key AS key, p.transcoderSet AS transcoder_set, p.text AS text,
       p.tokens AS tokens, p.tokenIds AS token_ids, p.nTokens AS n_tokens, properties(p) AS props
LIMIT 5
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
RETURN p.key AS key, p.transcoderSet AS transcoder_set, p.text AS text, p.nTokens AS n_tokens,
       properties(p) AS props
"""

# Which of $ids (global Feature ids) the store holds, and in how many prompts each occurs.
FEATURES = f"""
UNWIND $ids AS id
OPTIONAL MATCH (f:{L.FEATURE} {{id: id}})
RETURN id, f IS NOT NULL AS found, f.nPrompts AS nPrompts
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
  RETURN collect({{feature: f.name, positions: positions}}) AS tail, sum(peak) AS more,
         count(*) AS found
}}
WITH pid, head, tail, peak + more AS score WHERE found = size($rest)
ORDER BY score DESC, pid LIMIT $top
MATCH (p:{L.PROMPT} {{id: pid}})
RETURN p.key AS key, p.text AS text, score,
       [{{feature: $first.name, positions: head}}] + tail AS positions
ORDER BY score DESC, key
"""
