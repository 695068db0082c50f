"""The shipped demo artifacts: real file formats, small, legible tokens, and figures that
match the weights they ship with."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import circuitstore.demo
from circuitstore.demo import CORPUS, FIDELITY, MODEL, TRANSCODERS, WEIGHTS, token_texts
from circuitstore.ingest.model import load_model
from circuitstore.ingest.transcoder import load_transcoders, validate_against
from demo.make import corpus as dc
from demo.make.__main__ import TOLERANCE, compare
from demo.make.train import _splice_hooks, encode, mean_ce


@pytest.fixture(scope="module")
def figures() -> dict:
    return json.loads((WEIGHTS / "fidelity.json").read_text())


@pytest.fixture(scope="module")
def model():
    return load_model(WEIGHTS / "model")


@pytest.fixture(scope="module")
def transcoders():
    return load_transcoders(WEIGHTS / "transcoders")


def test_files_are_in_the_real_formats_and_small(figures):
    model_dir, tc_dir = WEIGHTS / "model", WEIGHTS / "transcoders"
    for name in ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"):
        assert (model_dir / name).is_file(), name
    n_layers = figures["spec"]["n_layers"]
    d_tc = figures["spec"]["d_tc"]
    for layer in range(n_layers):
        stem = (
            f"final_sparse_autoencoder_circuitstore-demo_blocks.{layer}.ln2.hook_normalized_{d_tc}"
        )
        assert (tc_dir / f"{stem}.pt").is_file()
        assert (tc_dir / f"{stem}_log_feature_sparsity.pt").is_file()
    total = sum(p.stat().st_size for p in WEIGHTS.rglob("*") if p.is_file())
    assert total < 5 * 2**20, f"shipped weights are {total / 2**20:.1f} MiB"


def test_transcoders_fit_the_model_and_have_unit_decoder_rows(model, transcoders, figures):
    validate_against(transcoders, n_layers=model.n_layers, d_model=model.d_model)
    assert transcoders.model_name == "circuitstore-demo"
    for layer, tc in enumerate(transcoders.transcoders):
        assert tc.hook_point == f"blocks.{layer}.ln2.hook_normalized"
        assert tc.cfg["out_hook_point"] == f"blocks.{layer}.hook_mlp_out"
        assert torch.allclose(tc.W_dec.norm(dim=1), torch.ones(tc.d_tc), atol=1e-5)
        assert tc.log_feature_sparsity is not None
        assert tc.log_feature_sparsity.shape == (tc.d_tc,)


def test_planted_tokens_are_single_tokens(model):
    tok = model.bridge.tokenizer
    words = [*dc.NAMES, *dc.INDUCTION_WORDS, *dc.PLACES, *dc.OBJECTS, *dc.YEAR_NOUNS]
    singles = [" " + w for w in words] + [f"{i:02d}" for i in range(1, 100)]
    singles += [f" {c}" for c in dc.CENTURIES]
    for text in singles:
        assert len(tok(text, add_special_tokens=False)["input_ids"]) == 1, text
    assert tok.convert_ids_to_tokens(tok("The war lasted from 1732 to 17")["input_ids"])[-4:] == [
        "Ġ17",
        "32",
        "Ġto",
        "Ġ17",
    ]


def test_prompts_start_with_bos(model):
    ids = model.bridge.to_tokens("When Mary and John went", prepend_bos=True)[0]
    assert int(ids[0]) == model.bridge.tokenizer.bos_token_id
    assert model.bridge.tokenizer.bos_token == "<|endoftext|>"


def test_recorded_figures_are_good_enough(figures):
    assert figures["fraction_loss_recovered"] > 0.8
    assert all(f > 0.7 for f in figures["fraction_loss_recovered_per_layer"])
    assert all(1 <= x <= 40 for x in figures["l0_per_layer"])
    acc = figures["accuracy"]
    assert acc["ioi"] > 0.9
    assert acc["years"] > 0.9
    assert acc["induction"] > 0.5


def test_recorded_losses_match_the_shipped_weights(model, transcoders, figures):
    held_out = dc.eval_split(figures["seed"])
    seqs = encode(model.bridge.tokenizer, [ex.training_text() for ex in held_out])
    clean = mean_ce(model, seqs, [])
    spliced = mean_ce(model, seqs, _splice_hooks(transcoders, range(model.n_layers)))
    assert clean == pytest.approx(figures["ce_clean"], rel=1e-4)
    assert spliced == pytest.approx(figures["ce_transcoders_spliced"], rel=1e-4)


def test_check_compares_within_tolerance(figures):
    assert compare(figures, figures) == []
    drifted = json.loads(json.dumps(figures))
    drifted["fraction_loss_recovered"] -= 2 * TOLERANCE["fraction_loss_recovered"][1]
    drifted["accuracy"]["ioi"] += 1.0
    drifted["l0_per_layer"] = drifted["l0_per_layer"][:-1]
    problems = compare(figures, drifted)
    assert len(problems) == 3, problems
    assert any(p.startswith("fraction_loss_recovered:") for p in problems)
    assert any(p.startswith("accuracy.ioi") for p in problems)


def test_token_texts_decode_every_id_as_the_tokenizer_does(model):
    """`circuitstore.demo.token_texts` (JSON only, no tokenizers package: the demo command labels
    logits with it) against the model's own tokenizer, for every id."""
    tok = model.bridge.tokenizer
    texts = token_texts()
    assert len(texts) == len(tok)
    wrong = {i: t for i, t in texts.items() if t != tok.decode([i])}
    assert wrong == {}
    assert texts[tok.bos_token_id] == "<|endoftext|>"
    assert texts[tok(" Kate", add_special_tokens=False)["input_ids"][0]] == " Kate"


def test_the_package_ships_what_the_demo_reads():
    assert {CORPUS.parent, WEIGHTS.parent} == {Path(circuitstore.demo.__file__).parent}
    assert CORPUS.is_file()
    assert FIDELITY.is_file()
    assert (MODEL / "model.safetensors").is_file()
    assert any(TRANSCODERS.glob("*.pt"))
