"""Devices: `--device` values, and the engine on a device giving the CPU's graph.

The engine tests run on the device named by CIRCUITSTORE_TEST_DEVICE (default: the CPU), so the
same file checks a GPU where one is at hand (`CIRCUITSTORE_TEST_DEVICE=cuda pytest ...`)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from circuitstore.commands.attribute import attribute
from circuitstore.ingest.attribution import AttributionConfig, AttributionEngine
from circuitstore.ingest.config import IngestConfig, check_device
from circuitstore.ingest.device import resolve_device
from circuitstore.ingest.model import load_model
from circuitstore.ingest.transcoder import load_transcoders
from circuitstore.schema.errors import ConfigError

from .conftest import PROMPT

DEVICE = os.environ.get("CIRCUITSTORE_TEST_DEVICE", "cpu")


@pytest.mark.parametrize("spec", ["gpu", "cuda:", "cuda:x", "CPU", "cuda:123", "", "tpu"])
def test_device_strings_are_checked(spec: str) -> None:
    with pytest.raises(ConfigError, match="allowed auto, cpu, cuda or cuda:N"):
        check_device(spec)
    with pytest.raises(ConfigError, match="--device"):
        IngestConfig(model="m", transcoders="t", prompts="p", device=spec)


def test_auto_picks_what_torch_sees() -> None:
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == expected
    assert resolve_device("cpu") == torch.device("cpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_cuda_without_a_gpu_is_one_line(tiny_dirs: tuple[Path, Path]) -> None:
    with pytest.raises(ConfigError, match="torch sees no CUDA GPU"):
        resolve_device("cuda")
    args = ["--model", str(tiny_dirs[0]), "--transcoders", str(tiny_dirs[1]), "--prompt", "x"]
    result = CliRunner().invoke(attribute, [*args, "--device", "cuda:1"])
    assert result.exit_code == 2
    assert result.output.strip() == (
        "Error: --device cuda:1: torch sees no CUDA GPU on this machine (allowed here: auto, cpu)"
    )


@pytest.mark.parametrize("value", ["0", "-3", "many"])
def test_budgets_are_positive_or_none(tiny_dirs: tuple[Path, Path], value: str) -> None:
    args = ["--model", str(tiny_dirs[0]), "--transcoders", str(tiny_dirs[1]), "--prompt", "x"]
    result = CliRunner().invoke(attribute, [*args, "--max-edges", value])
    assert result.exit_code == 2
    assert "Invalid value for '--max-edges'" in result.output
    assert "allowed: an integer >= 1 or none" in result.output


@pytest.mark.parametrize("mode", ["exact", "lumped"])
def test_the_engine_on_the_test_device_gives_the_cpu_graph(
    tiny_dirs: tuple[Path, Path], mode: str
) -> None:
    """Float32 on DEVICE against float32 on the CPU: the same nodes, the same edges, and
    conservation (every target's in-edges add up to its value) to the same tolerance."""
    config = AttributionConfig(mode=mode, prune=None, logit_top_k=3)  # type: ignore[arg-type]
    graphs = []
    for device in ("cpu", DEVICE):
        where = resolve_device(device)
        model = load_model(tiny_dirs[0], device=where)
        engine = AttributionEngine(model, load_transcoders(tiny_dirs[1]))
        assert engine.transcoders[0].W_enc.device.type == where.type
        graph = engine.attribute(PROMPT, config)
        assert graph.edges.weight.device.type == where.type  # stays there until read back
        graphs.append(graph)
    cpu, dev = graphs
    assert torch.equal(cpu.nodes.kind, dev.nodes.kind.cpu())
    assert torch.equal(cpu.nodes.index, dev.nodes.index.cpu())
    a = {(s, t): w for s, t, w in zip(*(x.tolist() for x in _edges(cpu)), strict=True)}
    b = {(s, t): w for s, t, w in zip(*(x.tolist() for x in _edges(dev)), strict=True)}
    assert a.keys() == b.keys()
    for key, weight in a.items():
        assert b[key] == pytest.approx(weight, rel=1e-4, abs=1e-5)
    for graph in graphs:
        sums = torch.zeros(len(graph.nodes), dtype=torch.float64)
        sums.index_add_(0, graph.edges.target.cpu(), graph.edges.weight.cpu().double())
        targets = (graph.nodes.kind.cpu() == 0) | (graph.nodes.kind.cpu() == 4)
        value = graph.nodes.value.cpu().double()
        err = (sums - value).abs() / value.abs().clamp_min(1.0)
        assert float(err[targets].max()) < 1e-4


def _edges(graph):  # type: ignore[no-untyped-def]
    return graph.edges.source.cpu(), graph.edges.target.cpu(), graph.edges.weight.cpu()


def test_a_pruned_graph_on_the_test_device_keeps_the_cpu_features(
    tiny_dirs: tuple[Path, Path],
) -> None:
    config = AttributionConfig(mode="lumped", logit_top_k=3)
    kept = []
    for device in ("cpu", DEVICE):
        model = load_model(tiny_dirs[0], device=resolve_device(device))
        graph = AttributionEngine(model, load_transcoders(tiny_dirs[1])).attribute(PROMPT, config)
        kept.append(set(graph.nodes.ids()))
    # Float sums in another order may move a feature that sits exactly at the node threshold.
    assert len(kept[0] & kept[1]) / len(kept[0] | kept[1]) >= 0.98
