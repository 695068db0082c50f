"""Feature, logit and node names as users write them (no database)."""

from __future__ import annotations

import re

import pytest

from circuitstore.schema.errors import QueryError
from circuitstore.schema.names import (
    CLT,
    FEATURE_FAMILIES,
    KINDS,
    TRANSCODER,
    FeatureKey,
    FeatureRef,
    LocalRef,
    LogitRef,
    NodeId,
    NodeKind,
    check_range,
    feature_family,
    feature_name,
    in_family,
    parse_feature,
    parse_node,
    respell,
)


@pytest.mark.parametrize(
    ("text", "expected", "name"),
    [
        ("mlp8tc[355]", FeatureRef(8, 355), "mlp8tc[355]"),
        ("mlp8tc[355]@9", FeatureRef(8, 355, 9), "mlp8tc[355]@9"),
        ("clt8[355]", FeatureRef(8, 355), "clt8[355]"),
        ("clt8[355]@9", FeatureRef(8, 355, 9), "clt8[355]@9"),
        ("8:355", FeatureRef(8, 355), "mlp8tc[355]"),
        ("8:355@9", FeatureRef(8, 355, 9), "mlp8tc[355]@9"),
        ("  mlp0tc[0] ", FeatureRef(0, 0), "mlp0tc[0]"),
        (" clt0[0]@0 ", FeatureRef(0, 0, 0), "clt0[0]@0"),
    ],
)
def test_feature_forms(text, expected, name):
    """Every family's spelling is the same reference; each is named in the one it was
    written in, and the short form in the per-layer transcoder's."""
    ref = parse_feature(text)
    assert ref == expected
    assert ref.name == name


# (layer, index, pos) -> the name in each family.
NAMED = [
    ((8, 355, None), {"transcoder": "mlp8tc[355]", "clt": "clt8[355]"}),
    ((8, 355, 9), {"transcoder": "mlp8tc[355]@9", "clt": "clt8[355]@9"}),
    ((0, 0, 0), {"transcoder": "mlp0tc[0]@0", "clt": "clt0[0]@0"}),
    ((25, 98303, 63), {"transcoder": "mlp25tc[98303]@63", "clt": "clt25[98303]@63"}),
]


@pytest.mark.parametrize(("where", "names"), NAMED)
def test_rendering_takes_the_family(where, names):
    layer, index, pos = where
    assert set(names) == set(FEATURE_FAMILIES)
    for key, name in names.items():
        family = feature_family(key)
        assert family.name(layer, index, pos) == name
        assert feature_name(layer, index, pos, family) == name
        ref = FeatureRef(layer, index, pos, family)
        assert ref.name == name
        assert parse_feature(name) == FeatureRef(layer, index, pos)
        assert parse_node(name) == FeatureRef(layer, index, pos)
        if pos is not None:
            assert NodeId.feature(layer, pos, index, family) == name
            assert re.fullmatch(KINDS[NodeKind.FEATURE].local_id, name)
        else:
            assert FeatureKey("s", layer, index, family).name == name
            assert ref.key("s") == FeatureKey("s", layer, index)  # one feature, either spelling
            assert ref.key("s").name == name


def test_the_default_family_is_the_per_layer_transcoder():
    """Names rendered without a family, and sets stored before families, are TRANSCODER's."""
    assert feature_name(8, 355) == "mlp8tc[355]"
    assert FeatureKey("s", 8, 355).name == "mlp8tc[355]"
    assert feature_family(None) is TRANSCODER
    with pytest.raises(QueryError, match="feature family 'sae': expected one of transcoder, clt"):
        feature_family("sae")


@pytest.mark.parametrize(
    ("local_id", "transcoder", "clt"),
    [
        ("mlp8tc[355]@9", "mlp8tc[355]@9", "clt8[355]@9"),
        ("clt8[355]@9", "mlp8tc[355]@9", "clt8[355]@9"),
        ("rem[mlp1tc[3]@4]", "rem[mlp1tc[3]@4]", "rem[clt1[3]@4]"),
        ("rem[clt1[3]@4]", "rem[mlp1tc[3]@4]", "rem[clt1[3]@4]"),
        # Nothing else holds a feature's spelling: the rest is left as it was.
        ("mlp8err@9", "mlp8err@9", "mlp8err@9"),
        ("bias[mlp3]@9", "bias[mlp3]@9", "bias[mlp3]@9"),
        ("embed0@3", "embed0@3", "embed0@3"),
        ("logit[250]@31", "logit[250]@31", "logit[250]@31"),
        ("rem[attn2[3].q@5]", "rem[attn2[3].q@5]", "rem[attn2[3].q@5]"),
        ("bias[attn2[3].k]@1", "bias[attn2[3].k]@1", "bias[attn2[3].k]@1"),
        ("rem[logit[7]@2]", "rem[logit[7]@2]", "rem[logit[7]@2]"),
    ],
)
def test_respell(local_id, transcoder, clt):
    assert respell(local_id, TRANSCODER) == transcoder
    assert respell(local_id, CLT) == clt


@pytest.mark.parametrize(
    ("text", "transcoder", "clt"),
    [
        ("8:355@9", "mlp8tc[355]@9", "clt8[355]@9"),
        ("mlp8tc[355]@9", "mlp8tc[355]@9", "clt8[355]@9"),
        ("clt8[355]", "mlp8tc[355]", "clt8[355]"),
        ("rem[mlp1tc[3]@4]", "rem[mlp1tc[3]@4]", "rem[clt1[3]@4]"),
        ("mlp1err@4", "mlp1err@4", "mlp1err@4"),
        ("logit[250]@31", "logit[250]@31", "logit[250]@31"),
        ("logit", "logit", "logit"),
    ],
)
def test_a_typed_node_in_a_family(text, transcoder, clt):
    """What a user types, as the store of each family holds it."""
    ref = parse_node(text)
    assert in_family(ref, TRANSCODER) == transcoder
    assert in_family(ref, CLT) == clt


@pytest.mark.parametrize(
    "text",
    [
        "mlp8tc[x]",
        "mlp8tc355",
        "mlp8tc[355]@",
        "8:",
        ":355",
        "8:-1",
        "attn7[7]@4",
        "",
        "MLP8TC[355]",
        # A cross-layer feature has no `tc`; a per-layer one needs it; no other prefix.
        "clt8tc[355]",
        "mlp8[355]",
        "clt8[x]",
        "clt8[355]@",
        "clt[355]",
        "CLT8[355]",
        "clt8 [355]",
        "sae8[355]",
        "clt" + "9" * 10 + "[0]",
        "clt8err@9",
    ],
)
def test_malformed_feature_is_one_clear_line(text):
    with pytest.raises(QueryError) as err:
        parse_feature(text)
    message = str(err.value)
    assert "\n" not in message
    assert message == (
        f"feature {text!r}: expected mlp<layer>tc[<index>], mlp<layer>tc[<index>]@<pos>, "
        "clt<layer>[<index>], clt<layer>[<index>]@<pos> or <layer>:<index>"
    )


def test_names_round_trip():
    ref = parse_feature("8:355@9")
    assert ref.name == "mlp8tc[355]@9"
    assert ref.base_name == "mlp8tc[355]"
    assert parse_feature(ref.name) == ref
    clt = parse_feature("clt8[355]@9")
    assert (clt.name, clt.base_name) == ("clt8[355]@9", "clt8[355]")
    assert parse_feature(clt.name) == clt == ref


def test_range_messages_spell_the_feature_in_its_family():
    with pytest.raises(QueryError, match=r"feature clt2\[0\]: layer 2 is out of range"):
        check_range(FeatureRef(2, 0, family=CLT), 2, 64, "s")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("logit", LogitRef()),
        ("logit[250]@31", LogitRef(250, 31)),
        ("embed0@3", LocalRef("embed0@3")),
        ("mlp1err@4", LocalRef("mlp1err@4")),
        ("bias[attn0]@2", LocalRef("bias[attn0]@2")),
        ("mlp1tc[5]@7", FeatureRef(1, 5, 7)),
        ("clt1[5]@7", FeatureRef(1, 5, 7)),
        ("1:5", FeatureRef(1, 5)),
        ("rem[clt1[5]@7]", LocalRef("rem[clt1[5]@7]")),
    ],
)
def test_node_forms(text, expected):
    assert parse_node(text) == expected


@pytest.mark.parametrize(
    "text",
    ["logit[250]", "logit@31", "embed@3", "nonsense", "mlp1tc[x]@2", "clt1tc[5]@7", "clt1err@4"],
)
def test_malformed_node(text):
    with pytest.raises(QueryError, match="expected a feature"):
        parse_node(text)


def test_range_names_the_allowed_range():
    check_range(FeatureRef(1, 63), 2, 64, "s")
    with pytest.raises(
        QueryError, match=r"layer 2 is out of range; transcoder set s has layers 0\.\.1"
    ):
        check_range(FeatureRef(2, 0), 2, 64, "s")
    with pytest.raises(
        QueryError, match=r"index 64 is out of range; .* features 0\.\.63 per layer"
    ):
        check_range(FeatureRef(0, 64), 2, 64, "s")


@pytest.mark.parametrize(
    ("text", "parsed"),
    [
        ("bias[attn2[3].q]@5", ("bias", 2, 3, "q", 5)),
        ("bias[attn0[0].k]@0", ("bias", 0, 0, "k", 0)),
        ("rem[attn11[7].k@4]", ("remainder", 11, 7, "k", 4)),
        (" rem[attn1[2].q@9] ", ("remainder", 1, 2, "q", 9)),
    ],
)
def test_qk_parts_round_trip(text, parsed) -> None:
    from circuitstore.schema.names import QKPart, parse_qk_contributor

    part = parse_qk_contributor(text)
    assert isinstance(part, QKPart)
    assert (part.what, part.layer, part.head, part.side, part.pos) == parsed
    assert part.name == text.strip()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("embed0@3", "embed0@3"),
        ("mlp0tc[70]@3", "mlp0tc[70]@3"),
        ("rem[mlp1tc[3]@4]", "rem[mlp1tc[3]@4]"),
        ("bias[attn2]@5", "bias[attn2]@5"),
        ("clt0[70]@3", "clt0[70]@3"),
        ("rem[clt1[3]@4]", "rem[clt1[3]@4]"),
    ],
)
def test_qk_contributors_that_are_graph_nodes_parse_as_nodes(text, expected) -> None:
    from circuitstore.schema.names import QKPart, parse_qk_contributor

    ref = parse_qk_contributor(text)
    assert not isinstance(ref, QKPart)
    assert ref.name == expected


@pytest.mark.parametrize("text", ["bias[attn2[3].x]@5", "bias[attn2[3]]@5", "attn2[3].q@5"])
def test_malformed_qk_contributors_are_refused(text) -> None:
    from circuitstore.schema.names import parse_qk_contributor

    with pytest.raises(QueryError):
        parse_qk_contributor(text)


@pytest.mark.parametrize(("text", "parsed"), [("attn2[3]", (2, 3)), (" attn11[0] ", (11, 0))])
def test_heads_parse(text, parsed) -> None:
    from circuitstore.schema.names import parse_head

    assert parse_head(text) == parsed


@pytest.mark.parametrize(
    "text", ["attn2", "attn[3]", "attn2[3]@4", "attn-1[0]", "attn" + "9" * 10 + "[0]"]
)
def test_malformed_heads_are_refused(text) -> None:
    from circuitstore.schema.names import parse_head

    with pytest.raises(QueryError, match="expected attn<layer>"):
        parse_head(text)


def test_qk_side_ids_and_biases() -> None:
    from circuitstore.schema.names import NodeId, qk_side_id

    assert qk_side_id(2, 3, "q", 5) == "attn2[3].q@5"
    assert NodeId.qk_bias(2, 3, "k", 1) == "bias[attn2[3].k]@1"
    assert NodeId.remainder(qk_side_id(0, 1, "k", 0)) == "rem[attn0[1].k@0]"
    with pytest.raises(ValueError, match="expected q or k"):
        qk_side_id(0, 0, "v", 0)


def test_a_stored_sets_families() -> None:
    """A set read from the store: its families as recorded; a set stored before they were
    recorded is GPT-2's per-layer transcoder; a family this version lacks fails where its
    names are needed, not when the store's sets are read."""
    from circuitstore.query.reader import TranscoderSetInfo

    clt = TranscoderSetInfo("s", 2, 64, feature_family="clt", model_family="gemma2")
    assert (clt.family, clt.model_family) == (CLT, "gemma2")
    old = TranscoderSetInfo("s", 2, 64)
    assert (old.feature_family, old.model_family, old.family) == ("transcoder", "gpt2", TRANSCODER)
    future = TranscoderSetInfo("s", 2, 64, feature_family="lorsa")
    with pytest.raises(QueryError, match="feature family 'lorsa'"):
        _ = future.family
