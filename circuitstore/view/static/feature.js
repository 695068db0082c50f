// A feature's page (`/feature/<name>`): everything its card shows at full length, plus its
// statistics, its virtual-weight neighbours (input-independent), its Neuronpedia dashboard
// where the set has a known source set, and the prompts where it fires most.
"use strict";

(() => {
  const {el, num} = CS;
  const f = CS.payload();
  const app = document.getElementById("app");
  const [drivers, targets, examples, logitLens, deembed, interventions] = CS.featureSections(f);
  const stats = Object.entries(f.stats).filter(([, v]) => v !== null);
  const virtual = (id, title, rows) => CS.section(id, title, CS.table(id + "-table", [
    {title: "#", num: true, cell: (_, i) => i + 1},
    {title: "feature", cell: (r) => [CS.featureLink(r.name), r.label ? el("span", {class: "label"}, " " + r.label) : null]},
    {title: "weight", num: true, cell: (r) => num(r.weight)},
  ], rows, (r) => ({"data-name": r.name})));
  const prompts = CS.section("prompts", "Prompts whose stored graphs hold it (by peak activation)", CS.table("prompts-table", [
    {title: "prompt", cell: (r) => el("a", {href: CS.promptHref(r.key)}, r.key)},
    {title: "positions", cell: (r) => r.positions.join(", ")},
    {title: "peak activation", num: true, cell: (r) => num(r.score)},
    {title: "text", cell: (r) => el("span", {class: "text"}, r.text)},
  ], f.prompts, (r) => ({"data-key": r.key})));
  app.append(
    el("section", {class: "feature-head"},
      el("h2", {}, f.feature, " ", el("span", {class: "muted"}, f.transcoderSet)),
      f.label ? el("p", {class: "label", id: "feature-label"}, f.label) : el("p", {class: "empty"}, "no label imported"),
      el("p", {class: "facts"}, stats.map(([k, v]) => el("span", {"data-stat": k}, `${k} ${num(v)}`))),
      f.neuronpedia ? el("p", {}, el("a", {id: "neuronpedia", href: f.neuronpedia, rel: "noreferrer", target: "_blank"},
        "Neuronpedia dashboard")) : null),
    // What it responds to on the left, how it connects on the right.
    el("div", {class: "columns"},
      el("div", {}, examples, prompts, logitLens, deembed, interventions),
      el("div", {}, drivers, targets,
        virtual("virtual-in", "Virtual weights in (from earlier features)", f.virtualIn),
        virtual("virtual-out", "Virtual weights out (to later features)", f.virtualOut))));
  CS.ready();
})();
