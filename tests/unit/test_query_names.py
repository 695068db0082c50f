"""Feature, logit and node names as users write them (no database)."""

from __future__ import annotations

import pytest

from circuitstore.schema.errors import QueryError
from circuitstore.schema.names import (
    FeatureRef,
    LocalRef,
    LogitRef,
    check_range,
    parse_feature,
    parse_node,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("mlp8tc[355]", FeatureRef(8, 355)),
        ("mlp8tc[355]@9", FeatureRef(8, 355, 9)),
        ("8:355", FeatureRef(8, 355)),
        ("8:355@9", FeatureRef(8, 355, 9)),
        ("  mlp0tc[0] ", FeatureRef(0, 0)),
    ],
)
def test_feature_forms(text, expected):
    assert parse_feature(text) == expected


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
    ],
)
def test_malformed_feature_is_one_clear_line(text):
    with pytest.raises(QueryError) as err:
        parse_feature(text)
    message = str(err.value)
    assert "\n" not in message
    assert message == (
        f"feature {text!r}: expected mlp<layer>tc[<index>], mlp<layer>tc[<index>]@<pos> or <layer>:<index>"
    )


def test_names_round_trip():
    ref = parse_feature("8:355@9")
    assert ref.name == "mlp8tc[355]@9"
    assert ref.base_name == "mlp8tc[355]"
    assert parse_feature(ref.name) == ref


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("logit", LogitRef()),
        ("logit[250]@31", LogitRef(250, 31)),
        ("embed0@3", LocalRef("embed0@3")),
        ("mlp1err@4", LocalRef("mlp1err@4")),
        ("bias[attn0]@2", LocalRef("bias[attn0]@2")),
        ("mlp1tc[5]@7", FeatureRef(1, 5, 7)),
        ("1:5", FeatureRef(1, 5)),
    ],
)
def test_node_forms(text, expected):
    assert parse_node(text) == expected


@pytest.mark.parametrize("text", ["logit[250]", "logit@31", "embed@3", "nonsense", "mlp1tc[x]@2"])
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
