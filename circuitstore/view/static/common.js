// What every page of `circuitstore view` shares: reading the data the server embedded, building
// DOM safely (text, never HTML: labels and tokens are user data), links, numbers, and the
// sections a node's card and a feature's page both show.
"use strict";

const CS = (() => {
  const payload = () => JSON.parse(document.getElementById("payload").textContent);

  // el("a", {href: "/x", class: "y"}, "text", child...): attributes set as attributes, strings
  // appended as text nodes.
  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
      else node.setAttribute(k, v === true ? "" : String(v));
    }
    for (const c of children.flat()) {
      if (c === null || c === undefined) continue;
      node.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return node;
  }

  // Numbers as a person reads them: 4 significant digits, exponents for the very small.
  function num(x) {
    if (x === null || x === undefined) return "–";
    if (typeof x !== "number") return String(x);
    if (Number.isInteger(x)) return x.toLocaleString("en");
    const a = Math.abs(x);
    if (a !== 0 && (a < 1e-3 || a >= 1e6)) return x.toExponential(2);
    return x.toPrecision(4).replace(/\.?0+$/, "");
  }

  // A token quoted so that spaces and empties show, as the CLI writes it.
  function tok(t) {
    if (t === null || t === undefined) return "";
    return "'" + String(t).replace(/\\/g, "\\\\").replace(/'/g, "\\'").replace(/\n/g, "\\n") + "'";
  }

  const enc = encodeURIComponent;
  const featureHref = (name) => "/feature/" + enc(name);
  const promptHref = (key) => "/prompt/" + enc(key);

  function featureLink(name, text) {
    return el("a", {href: featureHref(name), class: "feature", "data-feature": name}, text || name);
  }

  async function getJSON(url) {
    const response = await fetch(url, {credentials: "same-origin"});
    const body = await response.json().catch(() => ({error: `HTTP ${response.status}`}));
    if (!response.ok) throw new Error(body.error || `HTTP ${response.status}`);
    return body;
  }

  // The page is drawn and answers input: tests and benchmarks wait for this mark.
  function ready() {
    requestAnimationFrame(() => {
      window.__csReadyMs = performance.now();
      document.body.dataset.ready = "1";
    });
  }

  // A table of `rows`, or nothing where there are none (its section then says so).
  function table(id, columns, rows, rowAttrs) {
    if (!rows.length) return null;
    const head = el("tr", {}, columns.map((c) => el("th", {class: c.num ? "num" : null}, c.title)));
    const body = rows.map((r, i) =>
      el("tr", rowAttrs ? rowAttrs(r, i) : {},
        columns.map((c) => el("td", {class: c.num ? "num" : null}, c.cell(r, i)))));
    return el("table", {id, class: "rows"}, el("thead", {}, head), el("tbody", {}, body));
  }

  function section(id, title, content, empty) {
    const has = Array.isArray(content) ? content.some((c) => c) : content;
    return el("section", {id, class: "part"}, el("h3", {}, title),
      has ? content : el("p", {class: "empty"}, empty || "none stored"));
  }

  // A neighbour: a feature (a link to its page, with its label) or another node (its name
  // and token).
  function neighbour(r) {
    const feature = r.feature || (r.kind === "feature" ? r.name.split("@")[0] : null);
    const shown = r.token !== null && r.token !== undefined && r.kind !== "feature"
      ? `${r.name} ${tok(r.token)}` : r.name;
    const parts = [feature ? featureLink(feature, shown) : el("span", {class: "node"}, shown)];
    if (r.kind === "feature" && r.token !== null && r.token !== undefined) {
      parts.push(el("span", {class: "token"}, " " + tok(r.token)));
    }
    if (r.label) parts.push(el("span", {class: "label"}, " " + r.label));
    return parts;
  }

  // An attention edge's weight split: its strongest heads, the other heads, the same
  // position's residual part and the paths through several attention layers.
  // Parts below 0.1% of the edge's weight (float noise in the multi-layer rest) are left out.
  function split(s, total) {
    if (!s) return "";
    const shown = (w) => Math.abs(w) >= 1e-3 * Math.abs(total);
    const parts = s.heads.filter(([, w]) => shown(w)).map(([h, w]) => `${h} ${num(w)}`);
    if (shown(s.otherHeads)) parts.push(`other heads ${num(s.otherHeads)}`);
    if (shown(s.residual)) parts.push(`residual ${num(s.residual)}`);
    if (shown(s.multiLayer)) parts.push(`multi-layer ${num(s.multiLayer)}`);
    return parts.join(", ");
  }

  function links(id, title, rows, withSplit) {
    const columns = [
      {title: "#", num: true, cell: (_, i) => i + 1},
      {title: "node", cell: neighbour},
      {title: "weight", num: true, cell: (r) => num(r.total)},
    ];
    if (rows.some((r) => r.n !== undefined)) columns.splice(2, 0, {title: "n", num: true, cell: (r) => num(r.n)});
    if (withSplit && rows.some((r) => r.split)) columns.push({title: "by head", cell: (r) => split(r.split, r.total)});
    return section(id, title, table(id + "-table", columns, rows, (r) => ({"data-name": r.name})));
  }

  function examples(rows) {
    const columns = [
      {title: "prompt", cell: (r) => el("a", {href: promptHref(r.prompt)}, r.prompt)},
      {title: "context", cell: (r) => el("span", {class: "context"}, r.left, el("mark", {}, r.token), r.right)},
      {title: "activation", num: true, cell: (r) => num(r.activation)},
    ];
    return section("examples", "Top examples", table("examples-table", columns, rows,
      (r) => ({"data-prompt": r.prompt, "data-pos": r.pos})));
  }

  function tokens(id, title, list) {
    return section(id, title, list ? el("p", {class: "tokens"}, list.map((t) => el("code", {}, t))) : null,
      "not stored (ingest with views)");
  }

  function interventions(rows) {
    const columns = [
      {title: "prompt", cell: (r) => el("a", {href: promptHref(r.prompt)}, r.prompt)},
      {title: "kind", cell: (r) => r.kind},
      {title: "features", cell: (r) => (r.features || []).join(" ")},
      {title: "scale", num: true, cell: (r) => num(r.scale)},
      {title: "predicted", num: true, cell: (r) => num(r.predicted_diff)},
      {title: "observed", num: true, cell: (r) => num(r.observed_diff)},
      {title: "flips", cell: (r) => (r.flips ? "yes" : "no")},
    ];
    return section("interventions", "Interventions (verify)", table("interventions-table", columns, rows),
      "none stored (circuitstore verify --prompt KEY stores them)");
  }

  // The sections a feature's card and page share (payloads.feature_sections).
  function featureSections(f) {
    return [
      links("drivers", "Drivers across the corpus (DRIVES)", f.drivers),
      links("targets", "Targets across the corpus (DRIVES)", f.targets),
      examples(f.examples),
      tokens("logit-lens", "Logit lens: tokens it promotes", f.logitLens),
      tokens("deembed", "De-embedding: tokens that excite it", f.deembed),
      interventions(f.interventions),
    ];
  }

  return {payload, enc, el, num, tok, featureHref, promptHref, featureLink, getJSON, ready, table,
    section, neighbour, links, featureSections};
})();
