"""Viewer benchmark: how soon `circuitstore view`'s pages are drawn and answer input, in headless
Chromium, for the demo's pages and for a GPT-2-scale prompt's graph.

    python benchmarks/bench_view.py [--runs 5] [--demo-shard 0/8] [--gpt2-prompts 2]
                                    [--home DIR] [--write-docs]

The store: a server of its own (`circuitstore server start` in a temporary home, free loopback
ports, `--heap` 2g, `--pagecache` 1g), filled with a shard of the demo corpus
(`circuitstore demo --no-server --shard`) and with `--gpt2-prompts` 64-token prompts through
the GPT-2-small-scale random model of bench_attribution.py (12 layers x 24,576 features, built in
a child process) by the ingest job's default budgets (4,096 features, 50,000 edges; the set's
views left out, as bench_ingest.py leaves them). Then one `circuitstore view --port 0 --no-open`
per transcoder set, and Playwright's headless Chromium (the distribution's `chromium`).

Each page is opened `--runs` times after a first, cold, navigation (its graph not yet in the
viewer's cache, the static files not yet in the browser's), in a 1280 x 720 window. A viewer
reads its first prompt by key and a feature's page before it prints its URL (so that the server
has planned the statements); the prompts measured are others. Before the demo's longest prompt
and the last GPT-2-scale prompt, another prompt's page opens once: a fresh viewer's first
prompt page (for the GPT-2-scale one, the prompt its warm-up read).
The feature page is that of the demo prompt's most influential feature. Reported:

- ready: `window.__csReadyMs`, the page's own mark (the first animation frame after it is drawn
  and its handlers are set), from navigation start; split into the server's time to the first
  byte, the transfer, and the parsing, scripts and drawing after it;
- re-draw: the threshold slider set to 1.0 (its value set and an `input` event), to the second
  animation frame after;
- hover: `window.__csHoverMs` (from the `mouseenter` handler's start to its next animation frame)
  over the `--hover` largest circles, at each threshold; median and max over all runs;
- the HTML's size: the page with its data embedded.

Goals (the viewer's issue): a GPT-2-scale prompt's page ready within 2 s, the demo's pages
within 0.5 s, hover feedback within 100 ms. A `--home` is kept: a later run on it measures the
store it holds without filling it again (on a server just started, so with colder first loads).
`--write-docs` also writes the tables to docs/performance/bench_view.md, which the results page
includes.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import secrets
import select
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import quote

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

from local_server import LocalServer  # noqa: E402  (a sibling script, found via sys.path)
from results import Results  # noqa: E402

GPT2_D_TC = 24576  # the GPT-2-scale set's features per layer: how its set is told from the demo's
GOAL_GPT2_MS, GOAL_DEMO_MS, GOAL_HOVER_MS = 2000.0, 500.0, 100.0
VIEWPORT = {"width": 1280, "height": 720}
PAGE_TIMEOUT_MS = 60_000

# In the page: two animation frames, so that what a handler drew has been painted.
FRAMES = "() => new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(r)))"

TIMING = """() => {
  const nav = performance.getEntriesByType("navigation")[0];
  return {ready: window.__csReadyMs, requestStart: nav.requestStart,
          responseStart: nav.responseStart, responseEnd: nav.responseEnd};
}"""

# The `n` largest circles (by radius, so by influence) each entered and left in turn.
HOVER = f"""async (n) => {{
  const frames = {FRAMES};
  const circles = [...document.querySelectorAll("circle[data-node-id]")]
    .sort((a, b) => b.r.baseVal.value - a.r.baseVal.value).slice(0, n);
  const out = [];
  for (const c of circles) {{
    window.__csHoverMs = undefined;
    const box = c.getBoundingClientRect();
    const at = {{clientX: box.x + box.width / 2, clientY: box.y + box.height / 2}};
    c.dispatchEvent(new MouseEvent("mouseenter", at));
    await frames();
    out.push(window.__csHoverMs);
    c.dispatchEvent(new MouseEvent("mouseleave", at));
    await frames();
  }}
  return out;
}}"""

REDRAW = f"""async (value) => {{
  const input = document.getElementById("threshold");
  const t0 = performance.now();
  input.value = String(value);
  input.dispatchEvent(new Event("input", {{bubbles: true}}));
  await ({FRAMES})();
  return performance.now() - t0;
}}"""

# "Every stored node" ticked, then "more edges" until every edge among them is drawn: the
# worst case of a GPT-2-scale prompt. The times: ticking (to the second frame after), and the
# last "more edges" (the full draw).
EVERYTHING = f"""async () => {{
  const frames = {FRAMES};
  const box = document.getElementById("all-nodes");
  let t0 = performance.now();
  box.checked = true;
  box.dispatchEvent(new Event("change"));
  await frames();
  const nodes = performance.now() - t0;
  const more = document.getElementById("more-edges");
  let edges = 0;
  while (!more.hidden) {{
    t0 = performance.now();
    more.click();
    await frames();
    edges = performance.now() - t0;
  }}
  return {{nodes, edges}};
}}"""

# What the prompt page drew, and what its payload holds.
DRAWN = """() => {
  const p = JSON.parse(document.getElementById("payload").textContent);
  const kinds = {};
  for (const k of p.nodes.kind) kinds[k] = (kinds[k] || 0) + 1;
  return {nodes: p.nodes.id.length, edges: p.edges.weight.length, kinds,
          nodeCount: document.getElementById("node-count").textContent,
          edgeInfo: document.getElementById("edge-info").textContent};
}"""


# -- the store ---------------------------------------------------------------------------------


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "circuitstore.cli", *args]


def run_quiet(cmd: list[str], env: dict[str, str], what: str) -> str:
    """Run `cmd`; its output on failure, its stdout on success."""
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"{what} failed ({done.returncode}):\n{(done.stdout + done.stderr)[-3000:]}")
    return done.stdout


def fill_demo(server: LocalServer, shard: str) -> None:
    t0 = time.perf_counter()
    out = run_quiet(
        cli("demo", "--no-server", "--shard", shard, "--no-progress"), server.env, "demo"
    )
    summary = [line.strip() for line in out.splitlines() if line.startswith("  ")][:3]
    print(f"demo shard {shard}: {time.perf_counter() - t0:.0f} s; {'; '.join(summary)}", flush=True)


def fill_gpt2(server: LocalServer, n_prompts: int, n_tokens: int, folder: Path) -> None:
    """`n_prompts` random prompts of `n_tokens` tokens through the GPT-2-scale random model, with
    the ingest job's default budgets, views off (as bench_ingest.py runs it)."""
    from bench_ingest import RUN  # the ingest job as the command runs it, without the views

    t0 = time.perf_counter()
    model = folder / "model"
    build = [sys.executable, str(REPO / "benchmarks" / "bench_attribution.py")]
    run_quiet([*build, "--model-dir", str(model)], os.environ.copy(), "building the model")
    (model / "transcoders").rename(folder / "transcoders")  # as bench_ingest.py lays them out
    print(f"GPT-2-scale random model built: {time.perf_counter() - t0:.0f} s", flush=True)
    words = [f"w{i}" for i in range(2000)]
    rng = random.Random(3)
    corpus = folder / "gpt2.jsonl"
    rows = [
        {"id": f"gpt2-{i}", "text": " ".join(rng.choices(words, k=2 * n_tokens))}
        for i in range(n_prompts)
    ]
    corpus.write_text("".join(json.dumps(r) + "\n" for r in rows))
    fields = {  # the default budgets: 4,096 feature nodes, 50,000 edges
        "model": str(model),
        "transcoders": str(folder / "transcoders"),
        "prompts": str(corpus),
        "max_tokens": n_tokens,
        "truncate": True,
        "progress": False,
        "run": "bench-view",
        "catalog": f"sqlite:///{folder / 'catalog.sqlite'}",
    }
    t0 = time.perf_counter()
    out = run_quiet([sys.executable, "-c", RUN, repr(fields)], server.env, "GPT-2-scale ingest")
    print(f"GPT-2-scale ingest: {time.perf_counter() - t0:.0f} s", flush=True)
    for line in out.strip().splitlines():
        print(f"  {line}", flush=True)


def transcoder_sets(server: LocalServer) -> dict[str, str]:
    """The store's sets: {"demo": id, "gpt2": id} for those it holds prompts of."""
    from circuitstore.query import CircuitStore
    from circuitstore.schema.connection import Neo4jSettings, open_driver

    settings = Neo4jSettings(uri=server.uri, password=server.password)
    with open_driver(settings) as driver:
        store = CircuitStore(driver, settings.database)
        found = {}
        for tset in store.transcoder_sets().values():
            if CircuitStore(driver, settings.database, tset.id).prompts(limit=1):
                found["gpt2" if tset.d_transcoder == GPT2_D_TC else "demo"] = tset.id
        return found


# -- the viewer --------------------------------------------------------------------------------


@contextmanager
def viewer(server: LocalServer, tset: str, log: Path) -> Iterator[str]:
    """`circuitstore view` on a free port for one transcoder set: its URL (with the token)."""
    cmd = cli("view", "--port", "0", "--no-open", "--transcoder-set", tset)
    with log.open("w") as err:
        proc = subprocess.Popen(cmd, env=server.env, stdout=subprocess.PIPE, stderr=err, text=True)
        try:
            yield first_line(proc, log)
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def first_line(proc: subprocess.Popen[str], log: Path, timeout: float = 60.0) -> str:
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    line = proc.stdout.readline().strip() if ready else ""
    if not line.startswith("http://"):
        proc.kill()
        sys.exit(f"circuitstore view did not start: {log.read_text()[-2000:]}")
    return line


# -- the browser -------------------------------------------------------------------------------


class Page:
    """One page's figures over its runs."""

    def __init__(self, name: str, goal: float) -> None:
        self.name, self.goal = name, goal
        self.html_bytes = 0
        self.first: dict[str, float] = {}
        self.runs: list[dict[str, float]] = []
        self.redraw: list[float] = []
        self.everything: list[dict[str, float]] = []  # every stored node, then every edge
        self.hover: dict[str, list[float]] = {}
        self.drawn: dict[str, Any] = {}
        self.error: str | None = None
        self.fresh: tuple[str, dict[str, float]] | None = None  # a fresh viewer's first graph

    def median(self, key: str) -> float:
        return statistics.median(r[key] for r in self.runs)


def open_page(page: Any, url: str) -> tuple[dict[str, float], int]:
    """Navigate, wait for the ready mark: the timings and the HTML's size."""
    response = page.goto(url, wait_until="commit", timeout=PAGE_TIMEOUT_MS)
    body = response.body() if response is not None else b""
    if response is None or response.status != 200:
        status = response.status if response is not None else "no response"
        text = page.locator(".error").first.text_content(timeout=PAGE_TIMEOUT_MS)
        raise PageError(f"HTTP {status}: {text}")
    page.wait_for_function(
        "() => document.body && document.body.dataset.ready === '1'", timeout=PAGE_TIMEOUT_MS
    )
    t = page.evaluate(TIMING)
    timing = {
        "ready": t["ready"],
        "server": t["responseStart"] - t["requestStart"],
        "transfer": t["responseEnd"] - t["responseStart"],
        "client": t["ready"] - t["responseEnd"],
    }
    return timing, len(body)


class PageError(Exception):
    """A page that came back with an error instead of being drawn."""


def measure(page: Any, url: str, result: Page, runs: int, hover: int, graph: bool) -> None:
    try:
        result.first, result.html_bytes = open_page(page, url)
        for _ in range(runs):
            timing, _ = open_page(page, url)
            result.runs.append(timing)
            if graph:
                interact(page, result, hover)
    except PageError as exc:
        result.error = str(exc)
    print(f"  {result.name}: {summary(result)}", flush=True)


def interact(page: Any, result: Page, hover: int) -> None:
    """On a prompt page: hover at the default threshold, the slider to 1.0, hover again; then
    every stored node and every edge among them drawn, and hover once more."""
    result.drawn.setdefault("0.8", page.evaluate(DRAWN))
    result.hover.setdefault("0.8", []).extend(page.evaluate(HOVER, hover))
    result.redraw.append(page.evaluate(REDRAW, 1.0))
    result.drawn.setdefault("1.0", page.evaluate(DRAWN))
    result.hover.setdefault("1.0", []).extend(page.evaluate(HOVER, hover))
    result.everything.append(page.evaluate(EVERYTHING))
    result.drawn.setdefault("all", page.evaluate(DRAWN))
    result.hover.setdefault("all", []).extend(page.evaluate(HOVER, hover))


def summary(result: Page) -> str:
    if result.error:
        return f"error: {result.error}"
    return f"ready {result.median('ready'):.0f} ms (first {result.first['ready']:.0f} ms)"


def browse(urls: dict[str, str], args: argparse.Namespace) -> list[Page]:
    """Every page kind, in headless Chromium (a context per viewer: its own token cookie)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=shutil.which("chromium"))
        try:
            demo = Tab(browser, urls["demo"], args)
            pages = [demo.measure("demo: prompt list", "/", GOAL_DEMO_MS)]
            prompts = demo.payload("p.prompts")  # of the page last opened
            pages[-1].drawn = {"prompts": len(prompts)}
            # The demo's largest graphs: its longest prompts; the second opens first, so that
            # the measured one's first load is a graph read by a viewer already under way.
            by_size = sorted(prompts, key=lambda r: (-(r["nTokens"] or 0), r["key"]))
            key, before = by_size[0]["key"], by_size[1]["key"]
            path = f"/prompt/{key}"
            pages.append(demo.measure(f"demo: prompt `{key}`", path, GOAL_DEMO_MS, before))
            feature = demo.payload(STRONGEST)
            path = f"/feature/{feature}"
            pages.append(demo.measure(f"demo: feature `{feature}`", path, GOAL_DEMO_MS))
            gpt2 = Tab(browser, urls["gpt2"], args)
            # The viewer reads its first prompt by key before it prints its URL (its warm-up):
            # that one opens first, and the measured one's first load reads the store.
            keys = sorted(gpt2.payload("p.prompts.map((r) => r.key)", "/"))
            before = keys[0] if len(keys) > 1 else None
            name, path = f"GPT-2 scale: prompt `{keys[-1]}`", f"/prompt/{keys[-1]}"
            pages.append(gpt2.measure(name, path, GOAL_GPT2_MS, before))
            return pages
        finally:
            browser.close()


# The feature of the most influential feature node of the prompt page open.
STRONGEST = """(() => {
  let best = -1;
  p.nodes.kind.forEach((k, i) => {
    if (k === "feature" && (best < 0 || p.nodes.influence[i] > p.nodes.influence[best])) best = i;
  });
  return p.nodes.name[best];
})()"""


class Tab:
    """A browser tab on one viewer, its token's cookie set without opening a page (a static
    file), so that each page's first load is a cold one."""

    def __init__(self, browser: Any, url: str, args: argparse.Namespace) -> None:
        self.base, _, token = url.partition("/?token=")
        self.page = browser.new_context(viewport=VIEWPORT).new_page()
        self.page.goto(f"{self.base}/static/view.css?token={token}")
        self.args = args

    def url(self, path: str) -> str:
        head, _, name = path.rpartition("/")
        return f"{self.base}{head}/{quote(name, safe='')}"

    def payload(self, expr: str, path: str | None = None) -> Any:
        """`expr` of the page's embedded data `p` (opening `path` first, when given)."""
        if path is not None:
            self.page.goto(self.url(path))
        data = "JSON.parse(document.getElementById('payload').textContent)"
        return self.page.evaluate(f"() => {{ const p = {data}; return {expr}; }}")

    def measure(self, name: str, path: str, goal: float, before: str | None = None) -> Page:
        """The page at `path`; where `before` names a prompt, its page opens first."""
        result = Page(name, goal)
        if before is not None:
            result.fresh = before, open_page(self.page, self.url(f"/prompt/{before}"))[0]
        measure(
            self.page, self.url(path), result, self.args.runs, self.args.hover, "/prompt/" in path
        )
        return result


# -- the report --------------------------------------------------------------------------------


def report(out: Results, pages: list[Page], args: argparse.Namespace) -> None:
    out.print(
        f"Headless Chromium ({VIEWPORT['width']} x {VIEWPORT['height']}), the viewer and the "
        "store on the same machine. First load: the page's first navigation (its graph not yet "
        f"in the viewer's cache, the static files not yet in the browser's); then the median of "
        f"{args.runs} navigations. Hover over the {args.hover} largest circles in each of them, "
        "at the thresholds 0.8 and 1.0. Figures above the goal in bold.\n"
    )
    out.table(
        "page",
        "HTML bytes",
        "first load ms",
        "ready ms",
        "goal ms",
        "re-draw at 1.0 ms",
        f"hover median / max ms (goal {GOAL_HOVER_MS:.0f})",
    )
    for pg in pages:
        if pg.error:
            out.row(pg.name, "–", "–", f"error: {pg.error}", f"{pg.goal:.0f}", "–", "–")
            continue
        hover = [h for hs in pg.hover.values() for h in hs if h is not None]
        out.row(
            pg.name,
            f"{pg.html_bytes:,}",
            bold(pg.first["ready"], pg.goal),
            bold(pg.median("ready"), pg.goal),
            f"{pg.goal:.0f}",
            f"{statistics.median(pg.redraw):.0f}" if pg.redraw else "–",
            f"{bold(statistics.median(hover), GOAL_HOVER_MS, 1)} / "
            f"{bold(max(hover), GOAL_HOVER_MS, 1)}"
            if hover
            else "–",
        )
    breakdown(out, pages)
    drawn(out, pages)


def bold(ms: float, goal: float, digits: int = 0) -> str:
    return f"**{ms:.{digits}f}**" if ms > goal else f"{ms:.{digits}f}"


def breakdown(out: Results, pages: list[Page]) -> None:
    out.print(
        "\nWhere the time goes (ms): the server's time to the first byte (the store's reads, "
        "the payload built and serialised), the transfer, then parsing, scripts and drawing in "
        "the browser; for the prompt pages also the first prompt page a fresh viewer opened "
        "(another prompt, before the measured one).\n"
    )
    out.table("page", "load", "ready", "server", "transfer", "browser")
    for pg in pages:
        if pg.error:
            continue
        rows = [("first load", pg.first), (f"median of {len(pg.runs)}", median_run(pg))]
        if pg.fresh is not None:
            rows.insert(0, (f"a fresh viewer's first prompt page (`{pg.fresh[0]}`)", pg.fresh[1]))
        for what, t in rows:
            out.row(
                pg.name,
                what,
                f"{t['ready']:.0f}",
                f"{t['server']:.0f}",
                f"{t['transfer']:.0f}",
                f"{t['client']:.0f}",
            )


def median_run(pg: Page) -> dict[str, float]:
    return {k: pg.median(k) for k in pg.runs[0]}


def drawn(out: Results, pages: list[Page]) -> None:
    out.print("\nWhat the prompt pages hold, and draw at each threshold:\n")
    out.table(
        "page",
        "stored nodes (by kind)",
        "stored edges",
        "threshold 0.8",
        "threshold 1.0",
        "every stored node",
        "every node: tick / all edges, median ms",
        "hover at 0.8 / 1.0 / every node, median ms",
    )
    for pg in pages:
        if pg.error or "0.8" not in pg.drawn:
            continue
        d8, d1, da = pg.drawn["0.8"], pg.drawn["1.0"], pg.drawn["all"]
        kinds = ", ".join(f"{k} {v:,}" for k, v in sorted(d8["kinds"].items()))
        h8, h1, ha = (
            statistics.median(x for x in pg.hover[t] if x is not None)
            for t in ("0.8", "1.0", "all")
        )
        tick, full = (statistics.median(e[k] for e in pg.everything) for k in ("nodes", "edges"))
        out.row(
            pg.name,
            f"{d8['nodes']:,} ({kinds})",
            f"{d8['edges']:,}",
            f"{d8['nodeCount']}; {d8['edgeInfo']}",
            f"{d1['nodeCount']}; {d1['edgeInfo']}",
            f"{da['nodeCount']}; {da['edgeInfo']}",
            f"{tick:.0f} / {full:.0f}",
            f"{h8:.1f} / {h1:.1f} / {ha:.1f}",
        )


# -- main --------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="navigations per page (median)")
    parser.add_argument("--hover", type=int, default=20, help="circles hovered per run")
    parser.add_argument("--demo-shard", default="0/8", help="I/N: the demo corpus's share")
    parser.add_argument(
        "--gpt2-prompts", type=int, default=2, help="the first is measured, another opens first"
    )
    parser.add_argument("--tokens", type=int, default=64, help="tokens per GPT-2-scale prompt")
    parser.add_argument("--heap", default="2g")
    parser.add_argument("--pagecache", default="1g")
    parser.add_argument(
        "--home", type=Path, help="server home, kept and reused (default: a temporary folder)"
    )
    parser.add_argument("--write-docs", action="store_true", help="rewrite the docs' tables")
    args = parser.parse_args()
    # SIGTERM unwinds like Ctrl-C: the viewers, the server and the temporary folders go.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    home = args.home or Path(tempfile.mkdtemp(prefix="cs-bench-view-"))
    password_file = home / "bench-password"
    password = password_file.read_text() if password_file.exists() else secrets.token_urlsafe(12)
    server = LocalServer(home, password, heap=args.heap, pagecache=args.pagecache)
    work = Path(tempfile.mkdtemp(prefix="cs-bench-view-work-"))
    try:
        server.start()
        password_file.write_text(password)
        sets = transcoder_sets(server)
        if "demo" not in sets:  # first: `demo` also applies the schema
            fill_demo(server, args.demo_shard)
        if "gpt2" not in sets:
            fill_gpt2(server, args.gpt2_prompts, args.tokens, work)
        sets = transcoder_sets(server)
        with (
            Results("bench_view", enabled=args.write_docs) as out,
            viewer(server, sets["demo"], work / "view-demo.log") as demo_url,
            viewer(server, sets["gpt2"], work / "view-gpt2.log") as gpt2_url,
        ):
            print("measuring:", flush=True)
            report(out, browse({"demo": demo_url, "gpt2": gpt2_url}, args), args)
    finally:
        shutil.rmtree(work, ignore_errors=True)
        server.stop()
        if not args.home:
            shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()
