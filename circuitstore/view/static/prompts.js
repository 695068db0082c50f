// The prompt list (`/`): every stored prompt with its text, corpus fields and four scores;
// sorted by a click on a column, filtered by a search over the text and by corpus fields.
"use strict";

(() => {
  const {el, num} = CS;
  const data = CS.payload();
  const rows = data.prompts;
  const app = document.getElementById("app");
  const SCORES = [["replacement", "replacement"], ["completeness", "completeness"],
    ["stored_replacement", "stored repl."], ["stored_completeness", "stored compl."]];
  const extras = [...new Set(rows.flatMap((r) => Object.keys(r.extra)))].sort();
  const columns = [
    {key: "key", title: "prompt", get: (r) => r.key},
    {key: "text", title: "text", get: (r) => r.text},
    ...extras.map((k) => ({key: "x." + k, title: k, get: (r) => r.extra[k]})),
    {key: "nTokens", title: "tokens", num: true, get: (r) => r.nTokens},
    ...SCORES.map(([k, t]) => ({key: "s." + k, title: t, num: true, get: (r) => r.scores[k]})),
  ];
  // A select for each corpus field with a few values (a demo prompt's task).
  const facets = extras.filter((k) => {
    const values = new Set(rows.map((r) => r.extra[k]));
    return values.size > 1 && values.size <= 30;
  });
  const state = {sort: "key", desc: false, search: "", facet: {}};

  const search = el("input", {id: "search", type: "search", placeholder: "search the text, key or fields",
    oninput: (e) => { state.search = e.target.value.toLowerCase(); draw(); }});
  const selects = facets.map((k) => {
    const values = [...new Set(rows.map((r) => r.extra[k]))].sort();
    return el("label", {}, k + " ", el("select", {"data-facet": k,
      onchange: (e) => { state.facet[k] = e.target.value; draw(); }},
    el("option", {value: ""}, "all"), values.map((v) => el("option", {value: String(v)}, String(v)))));
  });
  const count = el("span", {id: "count"});
  const table = el("table", {id: "prompts", class: "rows"});
  const more = rows.length >= data.limit
    ? el("p", {class: "note"}, `The first ${data.limit} prompts by key; \`circuitstore query prompts\` lists them all.`)
    : null;
  app.append(el("div", {class: "controls"}, search, selects, count), table, more);

  function shown() {
    const q = state.search;
    const kept = rows.filter((r) =>
      (!q || [r.key, r.text, ...Object.values(r.extra)].some((v) => String(v ?? "").toLowerCase().includes(q))) &&
      facets.every((k) => !state.facet[k] || String(r.extra[k]) === state.facet[k]));
    const col = columns.find((c) => c.key === state.sort);
    const sign = state.desc ? -1 : 1;
    return kept.sort((a, b) => {
      const x = col.get(a), y = col.get(b);
      if (x === y) return a.key < b.key ? -1 : 1;
      if (x === null || x === undefined) return 1;   // missing scores last either way
      if (y === null || y === undefined) return -1;
      return (x < y ? -1 : 1) * sign;
    });
  }

  function draw() {
    const list = shown();
    count.textContent = `${list.length} of ${rows.length} prompts`;
    const head = el("tr", {}, columns.map((c) => el("th", {
      class: [c.num ? "num" : "", "sortable", state.sort === c.key ? (state.desc ? "desc" : "asc") : ""].join(" "),
      "data-sort": c.key,
      onclick: () => { state.desc = state.sort === c.key ? !state.desc : !!c.num; state.sort = c.key; draw(); },
    }, c.title)));
    const body = list.map((r) => el("tr", {"data-key": r.key}, columns.map((c) => {
      const v = c.get(r);
      if (c.key === "key") return el("td", {}, el("a", {href: CS.promptHref(r.key)}, r.key));
      return el("td", {class: c.num ? "num" : (c.key === "text" ? "text" : null)}, c.num ? num(v) : (v ?? ""));
    })));
    table.replaceChildren(el("thead", {}, head), el("tbody", {}, body));
  }

  draw();
  CS.ready();
})();
