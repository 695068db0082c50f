"""What the per-prompt storage budget keeps, on a trained model and at GPT-2 scale.

    python benchmarks/bench_budget.py [--demo-prompts 40] [--gpt2-prompts 2] [--device cpu]
                                      [--write-docs]

For each prompt, the pruned graph is computed once without a budget and once per budget
(`--max-feature-nodes` / `--max-edges`), from the same prepared state, and compared:
stored edges and features, the share of the total feature influence the stored features carry
(`keptInfluence`), the share of each stored logit's |input| its stored edges carry, and the
overlap (Jaccard) of the stored features with the unbudgeted graph's. Medians over prompts.

The demo model (circuitstore/demo: trained, 3 layers, 384 features a layer) runs on its shipped
held-out corpus; the GPT-2-scale model is the random one of bench_attribution.py (built in a
child process, loaded through the real loaders), on random 64-token prompts. `--write-docs`
also writes the tables to docs/performance/bench_budget.md, which the results page includes.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch

# (max_feature_nodes, max_edges): none, the default, and tighter ones. The demo model's graphs
# are small, so its budgets are scaled to where they bind.
DEMO_BUDGETS = [(None, None), (4096, 50_000), (32, 500), (16, 200)]
GPT2_BUDGETS = [(None, None), (4096, 50_000), (1024, 10_000)]


def graphs(engine, states, budgets):  # type: ignore[no-untyped-def]
    from circuitstore.ingest.attribution import AttributionConfig, PruneConfig

    rows = {b: [] for b in budgets}
    for state in states:
        base = None
        for budget in budgets:
            prune = PruneConfig(max_feature_nodes=budget[0], max_edges=budget[1])
            config = AttributionConfig(mode="lumped", prune=prune)
            graph = engine.graph(state, config)
            kinds = graph.nodes.kind.tolist()
            feats = {i for i, k in zip(graph.nodes.ids(), kinds, strict=True) if k == 0}
            base = feats if base is None else base
            logits = graph.nodes.kind == 4
            rows[budget].append(
                {
                    "edges": len(graph.edges),
                    "features": len(feats),
                    "kept": float(graph.metadata["kept_influence"]),
                    "logit_input": float(graph.accounting.kept_abs_fraction[logits].mean()),
                    "jaccard": len(feats & base) / max(1, len(feats | base)),
                }
            )
    return rows


def table(out, name: str, rows) -> None:  # type: ignore[no-untyped-def]
    out.print(f"\n{name}: medians over {len(next(iter(rows.values())))} prompts\n")
    out.table(
        "budget (features / edges)",
        "stored edges",
        "stored features",
        "influence kept",
        "logit input kept",
        "same features as unbudgeted (Jaccard)",
    )
    for budget, rs in rows.items():
        label = "none" if budget == (None, None) else f"{budget[0]:,} / {budget[1]:,}"
        med = {k: statistics.median(r[k] for r in rs) for k in rs[0]}
        out.row(
            label,
            f"{med['edges']:,.0f}",
            f"{med['features']:,.0f}",
            f"{med['kept']:.3f}",
            f"{med['logit_input']:.3f}",
            f"{med['jaccard']:.3f}",
        )


def demo(n: int, device: torch.device):  # type: ignore[no-untyped-def]
    from circuitstore.demo import CORPUS, MODEL, TRANSCODERS
    from circuitstore.ingest.attribution import AttributionConfig, AttributionEngine
    from circuitstore.ingest.model import load_model
    from circuitstore.ingest.transcoder import load_transcoders

    model = load_model(MODEL, device=device)
    engine = AttributionEngine(model, load_transcoders(TRANSCODERS))
    lines = CORPUS.read_text().splitlines()
    texts = [json.loads(line)["text"] for line in lines[:: max(1, len(lines) // n)][:n]]
    config = AttributionConfig(mode="lumped")
    with torch.no_grad():
        states = [engine.prepare(t, config) for t in texts]
        return graphs(engine, states, DEMO_BUDGETS)


def gpt2(n: int, device: torch.device):  # type: ignore[no-untyped-def]
    from bench_attribution import token_stream

    from circuitstore.ingest.attribution import AttributionConfig, AttributionEngine
    from circuitstore.ingest.model import load_model
    from circuitstore.ingest.transcoder import load_transcoders

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "gpt2-random"
        script = Path(__file__).with_name("bench_attribution.py")
        subprocess.run([sys.executable, script, "--model-dir", folder], check=True)
        model = load_model(folder, device=device)
        engine = AttributionEngine(model, load_transcoders(folder / "transcoders"))
    prompt = token_stream(model.bridge.tokenizer.bos_token_id)
    prompt(128)  # the calibration prompt
    config = AttributionConfig(mode="lumped")
    with torch.no_grad():
        states = [engine.prepare_tokens(prompt(64), config) for _ in range(n)]
        return graphs(engine, states, GPT2_BUDGETS)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--demo-prompts", type=int, default=40)
    parser.add_argument("--gpt2-prompts", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--write-docs", action="store_true", help="rewrite the docs' tables")
    args = parser.parse_args()
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from results import Results

    from circuitstore.ingest.device import resolve_device

    device = resolve_device(args.device)
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else None
    with Results("bench_budget", enabled=args.write_docs, accelerator=gpu) as out:
        rows = demo(args.demo_prompts, device)
        table(out, "The demo model (trained; 3 layers x 384 features)", rows)
        if args.gpt2_prompts:
            rows = gpt2(args.gpt2_prompts, device)
            table(
                out, "The GPT-2-scale random model (12 x 24,576 features), 64-token prompts", rows
            )


if __name__ == "__main__":
    main()
