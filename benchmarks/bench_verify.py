"""Trust figures on the demo's indirect-object prompts: `verify` and the two path searches.

    python benchmarks/bench_verify.py [--prompts 40] [--top 10] [--write-docs]

Against a server it starts (`circuitstore server start` in a temporary home, free loopback
ports), ingests the first N indirect-object prompts of the shipped demo corpus (default
settings: lumped mode, the default budget), then for every prompt whose stored top logit is the
corpus's answer:

1. `verify` (top 10 features, each removed alone, then all together): the frozen model's largest
   deviation from a stored edge; the agreement of the graph's predicted change of the answer's
   logit difference with the real model's (correlation, median relative error, sign agreement,
   pooled over every single-feature check); the share of prompts where removing the 10 together
   lowers the logit difference; the time per prompt.
   Then the same features scaled by 0.5, 0.9, 1.1, 1.5 and 2 instead of removed: the agreement
   at each size of intervention (first-order predictions should hold best near 1), and the
   prompt of the demo's own store whose agreement is nearest the median prompt's (the example
   the verification page shows).
2. `query paths`, exact (top 10 by |product of weights|) and `--method beam` (width 5, depth 3):
   whether the first path, or any of the 10, starts at the deciding name (the corpus's `source`
   token, the earlier mention of the answer), the overlap of the two top-10 sets, and the time
   per query.

`--write-docs` also writes the figures to docs/performance/bench_verify.md, which the results
page and the verification page include.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from local_server import LocalServer  # noqa: E402  (a sibling script)
from results import Results  # noqa: E402

from circuitstore.demo import CORPUS, MODEL, TRANSCODERS  # noqa: E402


def ingest(env: dict[str, str], rows: list[dict], tmp: Path) -> None:
    corpus = tmp / "ioi.jsonl"
    corpus.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    cmd = [
        sys.executable, "-m", "circuitstore", "ingest",
        "--model", str(MODEL), "--transcoders", str(TRANSCODERS), "--prompts", str(corpus),
        "--catalog", f"sqlite:///{tmp / 'catalog.sqlite'}", "--no-progress",
    ]  # fmt: skip
    for args in (["schema", "apply"], cmd[3:]):
        done = subprocess.run(cmd[:3] + args, env=env, capture_output=True, text=True)
        if done.returncode:
            sys.exit(done.stderr[-2000:])


def answered(store, rows: list[dict]) -> list[dict]:  # type: ignore[no-untyped-def]
    out = []
    for row in rows:
        _, graph = store.prompt_graph(row["id"])
        logits = [n for n in graph.nodes if n.kind == "logit"]
        if logits and max(logits, key=lambda n: n.value).token == row["answer"]:
            out.append(row)
    return out


# The sizes of intervention the agreement is measured at: 0 removes the features, 2 doubles them.
SCALES = (0.0, 0.5, 0.9, 1.1, 1.5, 2.0)


def run_verify(store, rows: list[dict], top: int, scale: float) -> tuple[list, list[float]]:  # type: ignore[no-untyped-def]
    """Each prompt's `verify` report at `scale`, and the seconds each took."""
    from circuitstore.commands.verify import check_prompt
    from circuitstore.ingest.intervene.verify import VerifyConfig

    reports, seconds = [], []
    for row in rows:
        start = time.perf_counter()
        cfg = VerifyConfig(row["id"], top=top, scale=scale, device="cpu")
        reports.append(check_prompt(cfg, store))
        seconds.append(time.perf_counter() - start)
    return reports, seconds


def verify_figures(out, reports: list, seconds: list[float], top: int) -> None:  # type: ignore[no-untyped-def]
    from circuitstore.ingest.intervene.verify import agreement

    checks = [c for r in reports for c in r.checks]
    lowered = [r.circuit.observed_diff < 0 for r in reports]
    frozen = [c.frozen_error for r in reports for c in (*r.checks, r.circuit)]
    pooled = agreement(checks)
    out.print(
        f"\n`verify` on {len(reports)} prompts ({top} features by support, each removed, then "
        f"together): {len(checks)} single-feature checks\n"
    )
    out.print(
        f"- frozen replacement model, largest deviation of a stored edge's target from the edge, "
        f"relative to the target's stored input: {max(frozen):.2g}"
    )
    out.print(
        "- real model against the graph's prediction of the logit-difference change: correlation "
        f"{pooled['correlation']:.2f}, median relative error "
        f"{pooled['median_relative_error']:.2f}, same sign in "
        f"{pooled['sign_agreement']:.0%}"
    )
    out.print(
        f"- removing the {top} together lowers the answer's logit difference to the runner-up "
        f"in {sum(lowered)} of {len(lowered)} prompts"
    )
    out.print(
        f"- {statistics.median(seconds):.1f} s per prompt (median), loading the model included"
    )


def scale_figures(out, sweep: dict[float, list], top: int) -> None:  # type: ignore[no-untyped-def]
    """The agreement at each size of intervention: a first-order account should hold best
    where the change is small (scales near 1)."""
    from circuitstore.ingest.intervene.verify import agreement

    n = len(next(iter(sweep.values())))
    out.print(
        f"\nThe same {top} features of each of the {n} prompts, scaled by `--scale` instead of "
        "removed (the activation changes by (scale - 1) x itself; the graph's prediction is "
        "linear in that change), pooled over the single-feature checks; the last two columns "
        f"are the checks of the {top} together\n"
    )
    out.table(
        "scale",
        "activation change",
        "correlation",
        "median relative error",
        "same sign",
        "together: same sign",
        "together: answer flips",
    )
    for scale, reports in sweep.items():
        pooled = agreement([c for r in reports for c in r.checks])
        circuits = [r.circuit for r in reports]
        same = sum((c.predicted_diff > 0) == (c.observed_diff > 0) for c in circuits)
        out.row(
            f"{scale:g}",
            f"{scale - 1:+.0%}",
            f"{pooled['correlation']:.2f}",
            f"{pooled['median_relative_error']:.2f}",
            f"{pooled['sign_agreement']:.0%}",
            f"{same} / {n}",
            f"{sum(c.flips for c in circuits)} / {n}",
        )


def typical_prompt(out, reports: list) -> None:  # type: ignore[no-untyped-def]
    """The prompt of the demo's own store (`circuitstore demo`'s shard) whose agreement at
    scale 0 is nearest the median prompt's: the example the verification page shows."""
    from circuitstore.ingest.corpus import shard_of
    from circuitstore.ingest.intervene.verify import agreement

    per = {r.prompt.key: agreement(r.checks) for r in reports}
    per = {k: a for k, a in per.items() if a["correlation"] is not None}
    corr = statistics.median(a["correlation"] for a in per.values())
    sign = statistics.median(a["sign_agreement"] or 0.0 for a in per.values())

    def distance(key: str) -> float:
        return abs(per[key]["correlation"] - corr) + abs((per[key]["sign_agreement"] or 0) - sign)

    in_demo = [k for k in per if shard_of(k, 4) == 0]  # `circuitstore demo`'s default, 0/4
    out.print(
        f"\nPer prompt (10 checks each, scale 0): median correlation {corr:.2f}, median "
        f"sign agreement {sign:.0%}; correlation below 0 in "
        f"{sum(a['correlation'] < 0 for a in per.values())} of {len(per)} prompts."
    )
    if in_demo:
        key = min(in_demo, key=distance)
        out.print(
            f"Of the {len(in_demo)} in the store `circuitstore demo` fills, {key} is nearest the "
            f"median (correlation {per[key]['correlation']:.2f}, sign agreement "
            f"{per[key]['sign_agreement']:.0%})."
        )


def path_figures(out, store, rows: list[dict]) -> None:  # type: ignore[no-untyped-def]
    found = {"exact": 0, "beam": 0}
    anywhere = {"exact": 0, "beam": 0}
    overlap, times = [], {"exact": [], "beam": []}
    for row in rows:
        info = store.prompt(row["id"])
        source = [i for i, t in enumerate(info.tokens) if t == row["source"]]
        runs = {}
        for method in ("exact", "beam"):
            start = time.perf_counter()
            runs[method] = store.paths(row["id"], top=10, method=method, beam_width=5, depth=3)
            times[method].append(time.perf_counter() - start)
            starts = [p.nodes[0] for p in runs[method].paths]
            deciding = [s.startswith("embed") and int(s.rsplit("@")[1]) in source for s in starts]
            found[method] += bool(deciding and deciding[0])
            anywhere[method] += any(deciding)
        exact = {p.nodes for p in runs["exact"].paths}
        beam = {p.nodes for p in runs["beam"].paths}
        overlap.append(len(exact & beam) / max(len(exact), 1))
    n = len(rows)
    out.print(
        f"\n`query paths` into the answer's logit on the same {n} prompts (top 10; the beam: "
        "width 5, depth 3)\n"
    )
    out.table(
        "method",
        "first path starts at the deciding name",
        "one of the 10 does",
        "median ms per query",
    )
    labels = {
        "exact": "exact (by size of the product of weights)",
        "beam": "beam (by contribution)",
    }
    for method in ("exact", "beam"):
        ms = 1000 * statistics.median(times[method])
        out.row(labels[method], f"{found[method]} / {n}", f"{anywhere[method]} / {n}", f"{ms:.0f}")
    out.print(
        "\nThe two top-10 sets overlap little: a median "
        f"{statistics.median(overlap):.0%} of the exact top 10 is in the beam's."
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=40)
    parser.add_argument("--top", type=int, default=10)
    parser.add_argument("--write-docs", action="store_true", help="rewrite the docs' figures")
    args = parser.parse_args()
    from circuitstore.query import CircuitStore

    rows = [json.loads(line) for line in CORPUS.read_text().splitlines()]
    rows = [r for r in rows if r["task"] == "ioi"][: args.prompts]
    with tempfile.TemporaryDirectory(prefix="bench-verify-") as name:
        tmp = Path(name)
        server = LocalServer(tmp / "neo4j", secrets.token_urlsafe(12), heap="1g", pagecache="1g")
        server.start()
        try:
            print(json.dumps({"load average": os.getloadavg()}))
            ingest(server.env, rows, tmp)
            os.environ["NEO4J_PASSWORD"] = server.password  # what CircuitStore.connect reads
            with (
                CircuitStore.connect(uri=server.uri) as store,
                Results("bench_verify", enabled=args.write_docs) as out,
            ):
                kept = answered(store, rows)
                out.print(
                    f"The demo model: the first {len(rows)} indirect-object prompts of its corpus "
                    f"ingested with the defaults (lumped mode); the {len(kept)} whose stored top "
                    "logit is the corpus's answer."
                )
                path_figures(out, store, kept)
                sweep = {}
                for scale in SCALES:
                    sweep[scale], seconds = run_verify(store, kept, args.top, scale)
                    if scale == 0.0:
                        verify_figures(out, sweep[scale], seconds, args.top)
                scale_figures(out, sweep, args.top)
                typical_prompt(out, sweep[0.0])
            print(json.dumps({"load average": os.getloadavg()}))
        finally:
            server.stop()


if __name__ == "__main__":
    main()
