from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from circuitstore.ingest.transcoder import TranscoderSet
from circuitstore.ingest.transcoder_set import layer_views
from circuitstore.schema.errors import InputError
from circuitstore.schema.names import FeatureKey

from .conftest import Tiny
from .views_oracle import (
    deembedding,
    logit_lens,
    virtual_weights_in,
    virtual_weights_out,
)


def test_virtual_weights_match_brute_force(tiny: Tiny) -> None:
    tcs = tiny.transcoders
    got = virtual_weights_in(tcs, 2, 5, k=4)
    all_w = [
        (la, j, float(tcs[la].W_dec[j] @ tcs[2].W_enc[:, 5]))
        for la in range(2)
        for j in range(tcs[la].d_tc)
    ]
    want = sorted(all_w, key=lambda x: -abs(x[2]))[:4]
    assert [(n.layer, n.index) for n in got] == [(la, j) for la, j, _ in want]
    assert got[0].weight == pytest.approx(want[0][2])
    out = virtual_weights_out(tcs, 0, 7, k=3)
    assert all(n.layer in (1, 2) for n in out)
    assert out[0].weight == pytest.approx(
        float(tcs[0].W_dec[7] @ tcs[out[0].layer].W_enc[:, out[0].index])
    )
    assert virtual_weights_out(tcs, 2, 0) == []


def test_bulk_virtual_rows_equal_per_feature_views(tiny: Tiny) -> None:
    """The store's VIRTUAL_WEIGHT rows (chunked, running top-k over source layers) are each
    feature's brute-force top-k, for every feature of every layer."""
    tcs = tiny.transcoders
    got: dict[str, list[tuple[str, float]]] = {}
    for layer in range(tcs.n_layers):
        _, rows = layer_views(tiny.model, tcs, "set", layer, top_k=4)
        for r in rows:
            got[r["target"]] = [(source, weight) for source, weight in r["sources"]]
    assert len(got) == sum(tcs[layer].d_tc for layer in range(1, tcs.n_layers))
    for layer in range(1, tcs.n_layers):
        for index in range(tcs[layer].d_tc):
            want = virtual_weights_in(tcs, layer, index, k=4)
            have = got[FeatureKey("set", layer, index).id]
            assert [s for s, _ in have] == [FeatureKey("set", n.layer, n.index).id for n in want]
            assert [w for _, w in have] == pytest.approx([n.weight for n in want])


def test_token_views(tiny: Tiny) -> None:
    de = deembedding(tiny.model, tiny.transcoders, 3, k=5)
    scores = tiny.model.weights.W_E @ tiny.transcoders[0].W_enc[:, 3]
    assert de[0].token_id == int(scores.argmax())
    assert [d.score for d in de] == sorted((d.score for d in de), reverse=True)
    lens = logit_lens(tiny.model, tiny.transcoders, 1, 9, k=3)
    assert lens[0].token_id == int((tiny.transcoders[1].W_dec[9] @ tiny.model.weights.W_U).argmax())
    assert isinstance(lens[0].token, str)
    with pytest.raises(InputError, match="out of range"):
        logit_lens(tiny.model, tiny.transcoders, 3, 0)
    assert torch.is_tensor(scores)


def test_bulk_token_views_equal_per_feature_views(tiny: Tiny) -> None:
    model, tcs = tiny.model, tiny.transcoders
    for layer in range(tcs.n_layers):
        rows, _ = layer_views(model, tcs, "set", layer, top_k=5)
        assert len(rows) == tcs[layer].d_tc
        for index in (0, 7, tcs[layer].d_tc - 1):
            props = rows[index]["props"]
            assert rows[index]["id"] == FeatureKey("set", layer, index).id
            want = [t.token for t in logit_lens(model, tcs, layer, index, k=5)]
            assert props["logitLensTokens"] == want
            if layer == 0:
                want = [t.token for t in deembedding(model, tcs, index, k=5)]
                assert props["deembedTokens"] == want
            else:
                assert "deembedTokens" not in props


def cross_layer(tcs: TranscoderSet, seed: int = 11) -> TranscoderSet:
    """`tcs` as a cross-layer transcoder: each layer's features also write to every later
    layer's MLP output."""
    gen = torch.Generator().manual_seed(seed)
    n = tcs.n_layers
    return TranscoderSet(
        tuple(
            replace(
                tc,
                W_dec_ahead=None
                if tc.layer == n - 1
                else torch.randn(
                    tc.d_tc, n - 1 - tc.layer, tc.d_model, generator=gen, dtype=tc.W_dec.dtype
                )
                * 0.3,
            )
            for tc in tcs.transcoders
        ),
        tcs.source,
        tcs.model_name,
    )


def test_a_cross_layer_features_views_count_all_it_writes(tiny: Tiny) -> None:
    """A CLT feature of layer 0 reaches layer 2's encoder through its writes to the MLP outputs
    of layers 0 and 1, and the logits through all three: the views sum them, and the bulk rows
    equal the per-feature reference for every feature."""
    model, clt = tiny.model, cross_layer(tiny.transcoders)
    assert clt.cross_layer
    by_hand = float((clt[0].W_dec[5] + clt[0].W_dec_ahead[5, 0]) @ clt[2].W_enc[:, 7])
    reached = {(n.layer, n.index): n.weight for n in virtual_weights_in(clt, 2, 7, k=400)}
    assert reached[0, 5] == pytest.approx(by_hand)
    assert by_hand != pytest.approx(float(clt[0].W_dec[5] @ clt[2].W_enc[:, 7]))
    lens = (clt[0].W_dec[5] + clt[0].W_dec_ahead[5].sum(0)) @ model.weights.W_U
    assert logit_lens(model, clt, 0, 5, k=1)[0].token_id == int(lens.argmax())
    for layer in range(clt.n_layers):
        tokens, rows = layer_views(model, clt, "set", layer, top_k=4)
        have = {r["target"]: r["sources"] for r in rows}
        for index in (0, 7, clt[layer].d_tc - 1):
            want = [t.token for t in logit_lens(model, clt, layer, index, k=4)]
            assert tokens[index]["props"]["logitLensTokens"] == want
            if layer == 0:
                continue
            want_in = virtual_weights_in(clt, layer, index, k=4)
            got = have[FeatureKey("set", layer, index).id]
            assert [s for s, _ in got] == [FeatureKey("set", n.layer, n.index).id for n in want_in]
            assert [w for _, w in got] == pytest.approx([n.weight for n in want_in])
    out = virtual_weights_out(clt, 0, 5, k=400)
    assert {(n.layer, n.index): n.weight for n in out}[2, 7] == pytest.approx(by_hand)
