// circuitstore cookbook: the common questions as parameterised Cypher for the Neo4j Browser.
// Paste one block at a time: first its :param lines, then the query. Feature names in the store
// look like mlp8tc[355] (property `name` on :Feature, `localId` on per-prompt nodes); prompts are
// found by their key (`Prompt.key`). Style the results with query/style.grass: drop the file on
// the `:style` frame, or type `:style ` and paste the file (Ctrl+V). Never type the style in: the
// editor auto-closes each `{`, and the stray `}` crashes every graph view (`:style reset` undoes
// it). Paste blocks here the same way. Features are looked up per transcoder set (`ts`) so that
// the Feature(transcoderSet, layer, index) and Occurrence(transcoderSet, layer, feature) indexes
// serve them; without `transcoderSet` a large store would be scanned label-wide. The defaults
// name what `circuitstore demo` stores: the prompt eval-ioi-000010 and two features on its way
// to the answer, mlp0tc[70] and mlp2tc[298]; a block that reads what another command writes says
// which.

// 1. What is in the store: transcoder sets, prompts, features that fired.
MATCH (s:TranscoderSet)
RETURN s.id AS transcoderSet, s.nLayers AS layers, s.dTranscoder AS features,
       COUNT { MATCH (p:Prompt {transcoderSet: s.id}) } AS prompts,
       COUNT { MATCH (f:Feature {transcoderSet: s.id}) WHERE f.nPrompts > 0 } AS activeFeatures;

// 2. Hub features: those that fire in the most prompts.
:param top => 10;
MATCH (f:Feature) WHERE f.nPrompts > 0
RETURN f.name AS feature, f.nPrompts AS prompts, f.nActive AS activations,
       f.maxActivation AS maxActivation
ORDER BY prompts DESC, feature LIMIT $top;

// 3. Which features drive a feature across the whole corpus (DRIVES), by total weight.
:param layer => 2;
:param index => 298;
:param top => 10;
MATCH (ts:TranscoderSet)
MATCH (f:Feature {transcoderSet: ts.id, layer: $layer, index: $index})<-[d:DRIVES]-(s:Feature)
RETURN s.name AS driver, d.n AS n, d.sum AS total, d.sum / d.n AS mean, d.maxAbs AS maxAbs
ORDER BY total DESC LIMIT $top;

// 4. The same drivers as a graph (strongest |total| first; each DRIVES edge captioned by its sum).
:param layer => 2;
:param index => 298;
:param top => 12;
MATCH (ts:TranscoderSet)
MATCH (f:Feature {transcoderSet: ts.id, layer: $layer, index: $index})<-[d:DRIVES]-(s:Feature)
WITH f, d, s ORDER BY abs(d.sum) DESC LIMIT $top
RETURN f, d, s;

// 5. What a feature drives across the corpus, as a graph (strongest |total| first).
:param layer => 0;
:param index => 70;
:param top => 15;
MATCH (ts:TranscoderSet)
MATCH (f:Feature {transcoderSet: ts.id, layer: $layer, index: $index})-[d:DRIVES]->(t:Feature)
WITH f, d, t ORDER BY abs(d.sum) DESC LIMIT $top
RETURN f, d, t;

// 6. Where a feature fires most: top examples with the token in context.
:param layer => 0;
:param index => 70;
:param window => 6;
MATCH (ts:TranscoderSet)
MATCH (f:Feature {transcoderSet: ts.id, layer: $layer, index: $index})-[t:TOP_EXAMPLE]->(p:Prompt)
WITH p, t, CASE WHEN t.pos < $window THEN 0 ELSE t.pos - $window END AS start
RETURN p.key AS prompt, t.activation AS activation, t.pos AS pos, p.tokens[t.pos] AS token,
       reduce(s = '', x IN p.tokens[start .. t.pos + $window + 1] | s + x) AS context
ORDER BY activation DESC;

// 7. What a feature is: statistics, views and virtual-weight neighbours.
:param layer => 2;
:param index => 298;
MATCH (ts:TranscoderSet)
MATCH (f:Feature {transcoderSet: ts.id, layer: $layer, index: $index})
RETURN f.name AS feature, f.nPrompts AS prompts, f.nActive AS activations,
       f.maxActivation AS maxActivation, f.logFrequency AS logFrequency,
       f.deembedTokens AS deembedTokens, f.logitLensTokens AS logitLensTokens,
       COLLECT { MATCH (f)<-[v:VIRTUAL_WEIGHT]-(o:Feature)
                 WITH o, v ORDER BY abs(v.weight) DESC LIMIT 5
                 RETURN o.name + ' ' + toString(round(v.weight, 3)) } AS virtualIn;

// 8. Which nodes drive a feature inside one prompt (ATTR), as a graph.
:param prompt => 'eval-ioi-000010';
:param layer => 2;
:param index => 298;
:param top => 20;
MATCH (p:Prompt {key: $prompt})
MATCH (o:Occurrence {prompt: p.id, layer: $layer, feature: $index})<-[a:ATTR]-(s:GraphNode)
WITH o, a, s ORDER BY abs(a.weight) DESC LIMIT $top
RETURN o, a, s;

// 9. How a prompt reaches its answer: two-hop paths into its top logit, strongest first.
:param prompt => 'eval-ioi-000010';
:param top => 10;
MATCH (p:Prompt {key: $prompt})
MATCH (l:GraphNode {prompt: p.id}) WHERE l:Logit
WITH l ORDER BY l.value DESC LIMIT 1
MATCH (a:GraphNode)-[r1:ATTR]->(b:GraphNode)-[r2:ATTR]->(l)
RETURN a.localId AS source, b.localId AS via, l.localId AS logit,
       r1.weight * r2.weight AS product
ORDER BY abs(product) DESC LIMIT $top;

// 10. The same, as a graph: the strongest edges into the top logit and into their sources.
:param prompt => 'eval-ioi-000010';
:param top => 8;
MATCH (p:Prompt {key: $prompt})
MATCH (l:GraphNode {prompt: p.id}) WHERE l:Logit
WITH l ORDER BY l.value DESC LIMIT 1
MATCH (b:GraphNode)-[r2:ATTR]->(l)
WITH l, b, r2 ORDER BY abs(r2.weight) DESC LIMIT $top
OPTIONAL MATCH (a:GraphNode)-[r1:ATTR]->(b) WHERE abs(r1.weight) >= abs(r2.weight) / 2
RETURN l, r2, b, r1, a;

// 11. Prompts in which two features co-occur (Occurrence index), with their positions.
:param layer => 0;
:param index => 70;
:param layer2 => 2;
:param index2 => 298;
MATCH (ts:TranscoderSet)
MATCH (o:Occurrence {transcoderSet: ts.id, layer: $layer, feature: $index})
WITH DISTINCT o.prompt AS pid
MATCH (x:Occurrence {prompt: pid, layer: $layer2, feature: $index2})
MATCH (p:Prompt {id: pid})
RETURN p.key AS prompt, collect(x.pos) AS positions, p.text AS text
ORDER BY prompt LIMIT 25;

// 12. Interventions (`circuitstore verify`): the features whose removal flips the answer most
// often across the corpus, with how often the stored graph predicted the logit difference's
// sign. Returns no rows until `circuitstore verify --prompt eval-ioi-000010` has run (it
// stores its checks; run it for more prompts to fill the corpus view).
:param top => 10;
MATCH (i:Intervention {kind: 'single', scale: 0.0})-[:ON_FEATURE]->(f:Feature)
RETURN f.name AS feature, count(*) AS checked,
       sum(CASE WHEN i.flips THEN 1 ELSE 0 END) AS flips,
       avg(CASE WHEN sign(i.predictedDiff) = sign(i.observedDiff) THEN 1.0 ELSE 0.0 END)
         AS signAgreement
ORDER BY flips DESC, checked DESC, feature LIMIT $top;

// 13. Attention heads (`ingest --heads-per-edge`, default 3): the heads that carry the most
// stored weight across the corpus (each ATTR edge numbers its strongest heads layer * nHeads +
// head), with the number of edges they are named on. Set task (a corpus field, e.g. 'ioi' in the
// demo) for one task's prompts.
:param task => null;
:param top => 10;
MATCH (p:Prompt) WHERE $task IS NULL OR p.task = $task
MATCH (s:TranscoderSet {id: p.transcoderSet})
MATCH (:GraphNode {prompt: p.id})-[a:ATTR]->()
WHERE a.heads IS NOT NULL
UNWIND range(0, size(a.heads) - 1) AS i
WITH s, a.heads[i] AS h, a.headWeights[i] AS w
RETURN 'attn' + toString(h / s.nHeads) + '[' + toString(h % s.nHeads) + ']' AS head,
       count(*) AS edges, sum(abs(w)) AS weight
ORDER BY weight DESC, head LIMIT $top;

// 14. QK traces (`ingest --qk-top`, `circuitstore qk --store`): the features whose occurrences
// on one side of a head's stored traces (key: what makes a position attended to; query: what
// makes a position look) most raise its attention scores, each trace's kept marginals summed
// by feature (`query qk-drivers` asks the same). Returns no rows until
// `circuitstore qk --prompt eval-ioi-000010 --head attn1[0] --query 14 --key 4 --store` has run.
:param layer => 1;
:param head => 0;
:param side => 'key';
:param top => 10;
MATCH (ts:TranscoderSet)
MATCH (t:QKTrace {transcoderSet: ts.id, layer: $layer, head: $head})
WITH t, CASE $side WHEN 'query' THEN [t.queryNodes, t.queryValues]
                   ELSE [t.keyNodes, t.keyValues] END AS s
UNWIND range(0, size(s[0]) - 1) AS i
WITH t, s[0][i] AS node, s[1][i] AS value WHERE node CONTAINS 'tc['
WITH t, split(node, '@')[0] AS feature, sum(value) AS value
RETURN feature, count(*) AS traces, sum(value) AS total, sum(value) / count(*) AS mean
ORDER BY total DESC, feature LIMIT $top;
