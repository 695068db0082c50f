// One prompt's graph (`/prompt/<key>`), laid out as the field draws attribution graphs: x is
// the token position, y the layer (embeddings at the bottom, logits at the top). Nodes are SVG
// circles (each with its node id in `data-node-id`), sized by influence and coloured by kind;
// edges are drawn on a canvas beneath them (a GPT-2-scale prompt holds ~50,000), coloured by
// sign, as wide as |weight|, strongest first up to a limit the page can raise.
//
// The threshold keeps the nodes carrying that share of the influence on the top logit, cut
// exactly as `query circuit` cuts it (graphs.circuit: by influence, ties by id, until the
// running sum reaches threshold x total). Hover highlights a node's inputs and outputs; a click
// opens its card; shift-click (or the card's button) pins it; pinned nodes get their subgraph's
// replacement and completeness scores from the server (query.graphs) and an export.
"use strict";

(() => {
  const {el, num, tok} = CS;
  const P = CS.payload();
  const N = P.nodes.id.length;
  const key = P.prompt.key;
  const infl = Float64Array.from(P.nodes.influence);
  const KINDS = ["embedding", "feature", "error", "bias", "logit"];
  const COLORS = {embedding: "#4e79a7", feature: "#f28e2b", error: "#b07aa1", bias: "#bab0ac", logit: "#e15759"};
  const POS_EDGE = "#2b6cb0", NEG_EDGE = "#d1495b";
  const M = {left: 64, right: 16, top: 16, bottom: 96};
  const state = {threshold: 0.8, all: false, edgeLimit: 4000, selected: null, pinned: new Set(), hover: null};

  // Edges by node, both ways, and sorted by |weight| (strongest drawn first).
  const E = P.edges, nE = E.weight.length;
  const ins = Array.from({length: N}, () => []), outs = Array.from({length: N}, () => []);
  for (let e = 0; e < nE; e++) { outs[E.source[e]].push(e); ins[E.target[e]].push(e); }
  const byStrength = Array.from({length: nE}, (_, e) => e)
    .sort((a, b) => Math.abs(E.weight[b]) - Math.abs(E.weight[a]));
  const maxAbs = nE ? Math.abs(E.weight[byStrength[0]]) : 1;
  const maxInfl = Math.max(1e-30, ...infl);
  const nTok = P.prompt.tokens.length;
  const row = (i) => P.nodes.kind[i] === "logit" ? P.nLayers + 1
    : P.nodes.kind[i] === "embedding" ? 0 : (P.nodes.layer[i] ?? -1) + 1;

  // -- the page ---------------------------------------------------------------------------
  const app = document.getElementById("app");
  const thresholdInput = el("input", {id: "threshold", type: "range", min: 0.05, max: 1, step: 0.01,
    value: state.threshold, oninput: (e) => { state.threshold = Number(e.target.value); schedule(layout); }});
  const thresholdShown = el("output", {id: "threshold-value"});
  // Every stored node, those without influence on the top logit too (off: as `query circuit`).
  const allInput = el("input", {id: "all-nodes", type: "checkbox",
    onchange: (e) => { state.all = e.target.checked; schedule(layout); }});
  const edgeInfo = el("span", {id: "edge-info"});
  const moreEdges = el("button", {id: "more-edges", type: "button",
    onclick: () => { state.edgeLimit *= 4; schedule(drawEdges); }}, "more edges");
  const head = el("section", {class: "prompt-head"},
    el("h2", {}, key),
    el("p", {class: "prompt-text"}, P.prompt.text),
    el("p", {class: "meta"}, Object.entries(P.prompt.extra).map(([k, v]) => el("span", {}, `${k}: ${v}`)),
      Object.entries(P.prompt.scores).map(([k, v]) => el("span", {"data-score": k}, `${k.replace("_", " ")}: ${num(v)}`))));
  const controls = el("div", {class: "controls"},
    el("label", {}, "influence threshold ", thresholdInput, " ", thresholdShown),
    el("label", {}, allInput, " every stored node"),
    el("span", {id: "node-count"}), edgeInfo, moreEdges, legend());
  const wrap = el("div", {class: "graph-wrap"});
  const card = el("aside", {id: "card"}, el("p", {class: "empty"}, "Click a node for its card; shift-click pins it."));
  const pinnedBox = el("section", {id: "pinned"});
  const hoverBox = el("div", {id: "hover", hidden: true});
  app.append(head, controls, el("div", {class: "graph-row"}, wrap, el("div", {class: "side"}, pinnedBox, card)), hoverBox);

  const W = Math.max(wrap.clientWidth || 900, 600), H = Math.max(window.innerHeight - 260, 420);
  const dpr = window.devicePixelRatio || 1;
  const canvas = el("canvas", {class: "edges"}), overlay = el("canvas", {class: "edges overlay"});
  for (const c of [canvas, overlay]) {
    c.width = W * dpr; c.height = H * dpr; c.style.width = W + "px"; c.style.height = H + "px";
  }
  const svg = d3.select(wrap).append("svg").attr("width", W).attr("height", H).attr("id", "graph");
  wrap.prepend(canvas, overlay);
  const zoomed = svg.append("g");
  const axes = zoomed.append("g").attr("class", "axes");
  const nodeLayer = zoomed.append("g").attr("class", "nodes");
  let transform = d3.zoomIdentity;
  svg.call(d3.zoom().scaleExtent([0.2, 20]).on("zoom", (ev) => {
    transform = ev.transform; zoomed.attr("transform", transform); schedule(drawEdges);
  }));

  function legend() {
    return el("span", {class: "legend"},
      KINDS.map((k) => el("span", {}, el("i", {style: `background:${COLORS[k]}`}), k)),
      el("span", {}, el("i", {class: "line", style: `background:${POS_EDGE}`}), "positive"),
      el("span", {}, el("i", {class: "line", style: `background:${NEG_EDGE}`}), "negative"));
  }

  // -- which nodes show, and where --------------------------------------------------------
  function kept() {
    if (state.all) return new Uint8Array(N).fill(1);
    const keep = new Uint8Array(N);
    keep[P.target] = 1;
    const limit = state.threshold * P.total * (1 - 1e-12);
    let running = 0;
    for (const i of P.ranked) {
      if (running >= limit) break;
      keep[i] = 1;
      running += infl[i];
    }
    return keep;
  }

  let keep = new Uint8Array(N), xs = new Float64Array(N), ys = new Float64Array(N), visible = [];
  const SPACING = 13;

  // Columns as wide as their busiest cell needs (up to 24 nodes a line), scaled together to
  // fill the frame: the positions where the circuit lives get the room.
  function columns(cells) {
    const busiest = new Array(nTok).fill(0);
    for (const [k, list] of cells) busiest[k % 100000] = Math.max(busiest[k % 100000], list.length);
    const want = busiest.map((c) => Math.max(28, Math.min(c, 24) * SPACING + 8));
    const f = (W - M.left - M.right) / want.reduce((a, b) => a + b, 0);
    const width = want.map((w) => w * f), left = [];
    let x = M.left;
    for (const w of width) { left.push(x); x += w; }
    return {width, left, perRow: width.map((w) => Math.max(1, Math.floor((w - 6) / SPACING)))};
  }

  function layout() {
    keep = kept();
    visible = [];
    for (let i = 0; i < N; i++) if (keep[i]) visible.push(i);
    const cells = new Map();
    for (const i of visible) {
      const k = row(i) * 100000 + (P.nodes.pos[i] ?? 0);
      if (!cells.has(k)) cells.set(k, []);
      cells.get(k).push(i);
    }
    const cols = columns(cells);
    const rows = P.nLayers + 2, lines = new Array(rows).fill(1);
    for (const [k, list] of cells) {
      list.sort((a, b) => infl[b] - infl[a] || (P.nodes.id[a] < P.nodes.id[b] ? -1 : 1));
      const r = Math.floor(k / 100000);
      lines[r] = Math.max(lines[r], Math.ceil(list.length / cols.perRow[k % 100000]));
    }
    const heights = lines.map((n) => Math.max(34, n * SPACING + 12));
    // Rows share the height left over, so that a small graph fills the frame.
    const spare = H - M.top - M.bottom - heights.reduce((a, b) => a + b, 0);
    if (spare > 0) heights.forEach((h, r) => { heights[r] = h + spare / rows; });
    const bottom = [];
    let y = M.top + heights.reduce((a, b) => a + b, 0);
    for (let r = 0; r < rows; r++) { bottom.push(y); y -= heights[r]; }
    for (const [k, list] of cells) {   // each cell's nodes centred in it, strongest first
      const r = Math.floor(k / 100000), pos = k % 100000, perRow = cols.perRow[pos];
      const x0 = cols.left[pos] + cols.width[pos] / 2, y0 = bottom[r] - heights[r] / 2;
      const nLines = Math.ceil(list.length / perRow);
      list.forEach((i, j) => {
        const line = Math.floor(j / perRow), at = j % perRow;
        const inLine = Math.min(perRow, list.length - line * perRow);
        xs[i] = x0 + (at - (inLine - 1) / 2) * SPACING;
        ys[i] = y0 + ((nLines - 1) / 2 - line) * SPACING;
      });
    }
    drawAxes(cols, bottom, heights);
    drawNodes();
    drawEdges();
    thresholdShown.textContent = state.threshold.toFixed(2);
    thresholdInput.disabled = state.all;
    document.getElementById("node-count").textContent = `${visible.length} of ${N} nodes`;
  }

  // The layer bands are drawn on the edge canvas, beneath the edges (an SVG band would hide
  // them); their names and the tokens are SVG text.
  let bands = [];

  function drawAxes(cols, bottom, heights) {
    const rows = P.nLayers + 2, width = cols.width.reduce((a, b) => a + b, 0);
    const names = ["emb", ...Array.from({length: P.nLayers}, (_, l) => `L${l}`), "logit"];
    bands = d3.range(rows).map((r) => [M.left, bottom[r] - heights[r], width, heights[r]]);
    axes.selectAll("text.layer").data(d3.range(rows)).join("text").attr("class", "layer")
      .attr("x", M.left - 8).attr("y", (r) => bottom[r] - heights[r] / 2).text((r) => names[r]);
    const slanted = Math.min(...cols.width) < 70;
    axes.selectAll("text.tok").data(P.prompt.tokens).join("text").attr("class", "tok")
      .attr("data-pos", (_, p) => p)
      .attr("transform", (_, p) => `translate(${cols.left[p] + cols.width[p] / 2},${bottom[0] + 14}) rotate(${slanted ? 35 : 0})`)
      .attr("text-anchor", slanted ? "start" : "middle")
      .text((t) => tok(t));
  }

  // At most SPACING wide, so that no circle covers its neighbour in a cell.
  const radius = (i) => 2.5 + 4 * Math.sqrt(infl[i] / maxInfl);

  let circleOf = new Map();   // node index -> its circle, for hover without a DOM search

  function drawNodes() {
    const circles = nodeLayer.selectAll("circle").data(visible, (i) => i).join(
      (enter) => enter.append("circle")
        .attr("data-node-id", (i) => P.nodes.id[i])
        .attr("class", (i) => `node kind-${P.nodes.kind[i]}`)
        .attr("fill", (i) => COLORS[P.nodes.kind[i]] || "#999")
        .on("mouseenter", (ev, i) => hover(i, ev))
        .on("mouseleave", () => hover(null))
        .on("click", (ev, i) => (ev.shiftKey ? togglePin(i) : select(i))),
      (update) => update,
      (exit) => exit.remove())
      .attr("cx", (i) => xs[i]).attr("cy", (i) => ys[i]).attr("r", radius)
      .classed("pinned", (i) => state.pinned.has(P.nodes.id[i]))
      .classed("selected", (i) => state.selected === i);
    circleOf = new Map();
    circles.each(function (i) { circleOf.set(i, this); });
  }

  // -- edges on the canvas ----------------------------------------------------------------
  function edgeStyle(ctx, w, alpha) {
    ctx.strokeStyle = w > 0 ? POS_EDGE : NEG_EDGE;
    ctx.globalAlpha = alpha;
  }

  function drawEdges() {
    const ctx = canvas.getContext("2d");
    ctx.setTransform(1, 0, 0, 1, 0, 0);
    ctx.clearRect(0, 0, canvas.width, canvas.height);
    ctx.setTransform(dpr * transform.k, 0, 0, dpr * transform.k, dpr * transform.x, dpr * transform.y);
    ctx.globalAlpha = 1;
    bands.forEach(([x, y, w, h], r) => { ctx.fillStyle = r % 2 ? "#f1f3f5" : "#fafbfc"; ctx.fillRect(x, y, w, h); });
    // Batched by colour and a few widths: one stroke() per batch, not per edge.
    const batches = new Map();
    let shown = 0, among = 0;
    for (const e of byStrength) {
      if (!keep[E.source[e]] || !keep[E.target[e]]) continue;
      among++;
      if (shown >= state.edgeLimit) continue;
      shown++;
      const w = E.weight[e], width = Math.round(8 * Math.sqrt(Math.abs(w) / maxAbs));
      const k = (w > 0 ? 1 : -1) * (width + 1);
      if (!batches.has(k)) batches.set(k, []);
      batches.get(k).push(e);
    }
    for (const [k, list] of batches) {
      edgeStyle(ctx, k, 0.45);
      ctx.lineWidth = (0.35 + (Math.abs(k) - 1) * 0.4) / transform.k;
      ctx.beginPath();
      for (const e of list) {
        ctx.moveTo(xs[E.source[e]], ys[E.source[e]]);
        ctx.lineTo(xs[E.target[e]], ys[E.target[e]]);
      }
      ctx.stroke();
    }
    edgeInfo.textContent = `${shown} of ${among} edges drawn (strongest first)`;
    moreEdges.hidden = shown >= among;
    drawHover();
  }

  // -- hover: a node's inputs and outputs -------------------------------------------------
  function hover(i, ev) {
    const t0 = performance.now();
    state.hover = i;
    const g = nodeLayer.node();
    g.querySelectorAll(".hl").forEach((n) => n.classList.remove("hl"));
    if (i === null) {
      g.classList.remove("hovering");
      hoverBox.hidden = true;
    } else {
      g.classList.add("hovering");
      const near = [i, ...ins[i].map((e) => E.source[e]), ...outs[i].map((e) => E.target[e])];
      for (const j of near) circleOf.get(j)?.classList.add("hl");
      hoverBox.replaceChildren(...describe(i));
      hoverBox.hidden = false;
      if (ev) { hoverBox.style.left = ev.pageX + 14 + "px"; hoverBox.style.top = ev.pageY + 10 + "px"; }
    }
    drawHover();
    requestAnimationFrame(() => { window.__csHoverMs = performance.now() - t0; });
  }

  function describe(i) {
    const parts = [el("b", {}, P.nodes.id[i]), " ", tok(P.nodes.token[i])];
    if (P.nodes.label[i]) parts.push(el("div", {}, P.nodes.label[i]));
    parts.push(el("div", {}, `influence ${num(infl[i])}`,
      P.nodes.activation[i] !== null ? `, activation ${num(P.nodes.activation[i])}` : ""));
    parts.push(el("div", {class: "muted"}, `${ins[i].length} inputs, ${outs[i].length} outputs stored`));
    return parts;
  }

  function drawHover() {
    const ctx = overlay.getContext("2d");
    ctx.setTransform(1, 0, 0, 1, 0, 0);
    ctx.clearRect(0, 0, overlay.width, overlay.height);
    const i = state.hover;
    if (i === null) return;
    ctx.setTransform(dpr * transform.k, 0, 0, dpr * transform.k, dpr * transform.x, dpr * transform.y);
    for (const e of [...ins[i], ...outs[i]]) {
      if (!keep[E.source[e]] || !keep[E.target[e]]) continue;
      edgeStyle(ctx, E.weight[e], 0.95);
      ctx.lineWidth = (0.8 + 3 * Math.sqrt(Math.abs(E.weight[e]) / maxAbs)) / transform.k;
      ctx.beginPath();
      ctx.moveTo(xs[E.source[e]], ys[E.source[e]]);
      ctx.lineTo(xs[E.target[e]], ys[E.target[e]]);
      ctx.stroke();
    }
  }

  // -- the card ---------------------------------------------------------------------------
  async function select(i) {
    state.selected = i;
    drawNodes();
    const id = P.nodes.id[i];
    saveHash();
    card.replaceChildren(el("p", {class: "loading"}, `loading ${id}…`));
    let data;
    try {
      data = await CS.getJSON(`/api/node?prompt=${CS.enc(key)}&node=${CS.enc(id)}`);
    } catch (err) {
      card.replaceChildren(el("p", {class: "error", role: "alert"}, err.message));
      return;
    }
    if (state.selected !== i) return;   // another click came first
    card.replaceChildren(...cardParts(i, data));
    card.dataset.node = id;
  }

  function cardParts(i, d) {
    const n = d.node, pinned = state.pinned.has(n.id);
    const title = el("h2", {}, n.id, " ", el("span", {class: "token"}, tok(n.token)));
    const facts = el("p", {class: "facts"},
      n.label ? el("span", {class: "label"}, n.label) : null,
      el("span", {}, `influence ${num(n.influence)}`),
      n.activation !== null ? el("span", {}, `activation ${num(n.activation)}`) : null,
      n.kind === "logit" ? el("span", {}, `logit ${num(n.value)}`) : null);
    const actions = el("p", {class: "actions"},
      el("button", {id: "pin-button", type: "button", onclick: () => togglePin(i)}, pinned ? "Unpin" : "Pin"),
      n.name ? CS.featureLink(n.name, `feature page: ${n.name}`) : null);
    return [title, facts, actions,
      CS.links("inputs", "Strongest inputs in this prompt", d.inputs, true),
      CS.links("outputs", "Strongest outputs in this prompt", d.outputs, false),
      ...(n.name ? CS.featureSections(d) : [])];
  }

  // -- pinning ----------------------------------------------------------------------------
  let scoreRequest = 0;

  function togglePin(i) {
    const id = P.nodes.id[i];
    if (state.pinned.has(id)) state.pinned.delete(id); else state.pinned.add(id);
    drawNodes();
    const button = document.getElementById("pin-button");
    if (button && card.dataset.node === id) button.textContent = state.pinned.has(id) ? "Unpin" : "Pin";
    saveHash();
    drawPinned();
  }

  async function drawPinned() {
    const ids = [...state.pinned].sort();
    if (!ids.length) {
      pinnedBox.replaceChildren(el("h3", {}, "Pinned subgraph"), el("p", {class: "empty"}, "Nothing pinned."));
      return;
    }
    const query = `prompt=${CS.enc(key)}` + ids.map((p) => `&pinned=${CS.enc(p)}`).join("");
    const scores = el("p", {id: "pinned-scores", class: "loading"}, "scoring…");
    pinnedBox.replaceChildren(el("h3", {}, `Pinned subgraph (${ids.length})`),
      el("ul", {class: "chips"}, ids.map((id) => el("li", {"data-pinned": id}, id,
        el("button", {type: "button", title: "unpin", onclick: () => togglePin(P.nodes.id.indexOf(id))}, "×")))),
      scores,
      el("p", {class: "actions"},
        el("a", {id: "export-pinned", href: `/api/export?${query}`, download: `${key}-subgraph.json`}, "Export (viewers' JSON)"),
        el("button", {type: "button", onclick: () => { state.pinned.clear(); drawNodes(); saveHash(); drawPinned(); }}, "Clear")));
    const mine = ++scoreRequest;
    try {
      const s = await CS.getJSON(`/api/scores?${query}`);
      if (mine !== scoreRequest) return;
      scores.className = "";
      scores.dataset.replacement = s.replacement;
      scores.dataset.completeness = s.completeness;
      scores.replaceChildren(`replacement ${num(s.replacement)} · completeness ${num(s.completeness)}`);
    } catch (err) {
      if (mine === scoreRequest) { scores.className = "error"; scores.textContent = err.message; }
    }
  }

  // The pinned nodes and the selected one live in the URL's hash: a view can be shared.
  function saveHash() {
    const parts = [];
    if (state.pinned.size) parts.push("pinned=" + [...state.pinned].sort().map(CS.enc).join(","));
    if (state.selected !== null) parts.push("node=" + CS.enc(P.nodes.id[state.selected]));
    history.replaceState(null, "", parts.length ? "#" + parts.join("&") : location.pathname + location.search);
  }

  function loadHash() {
    const params = new URLSearchParams(location.hash.slice(1));
    const index = new Map(P.nodes.id.map((id, i) => [id, i]));
    for (const id of (params.get("pinned") || "").split(",")) if (index.has(id)) state.pinned.add(id);
    const node = params.get("node");
    return node !== null && index.has(node) ? index.get(node) : null;
  }

  let pending = new Set();
  function schedule(fn) {
    if (!pending.size) requestAnimationFrame(() => { const todo = pending; pending = new Set(); todo.forEach((f) => f()); });
    pending.add(fn);
  }

  const first = loadHash();
  layout();
  drawPinned();
  if (first !== null) select(first);
  CS.ready();
})();
