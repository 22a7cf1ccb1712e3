"""The CDINet INT8 exclusion search (export.variants) on a real exported cdinet-s graph.

The quantizer runs for real on every try; the score is a stand-in for the S-measure drop that
depends on which layers the INT8 graph actually quantized, so the greedy choice can be checked
exactly: only the decoder hurts, so the decoder (and nothing else) must end up in float.
"""

import numpy as np
import onnx
import pytest
import torch

from edge_mm.registry import parse_model_name
from edge_mm.rgbd import RgbdPreprocess
from export.models import load_model
from export.onnx import cdinet_graph, export_graph
from export.variants import cdinet_groups, search_cdinet_int8


@pytest.fixture(scope="module")
def fp32(tmp_path_factory):
    torch.set_num_threads(2)
    loaded = load_model(parse_model_name("cdinet-s"), "random:0")
    loaded.preprocess = RgbdPreprocess(size=(32, 32))
    path = tmp_path_factory.mktemp("variants") / "model.onnx"
    return export_graph(cdinet_graph(loaded), path)


def quantized_fraction(model, names):
    """Fraction of `names` whose weight input comes from a DequantizeLinear (i.e. is INT8)."""
    dq = {o for n in model.graph.node if n.op_type == "DequantizeLinear" for o in n.output}
    nodes = {n.name: n for n in model.graph.node}
    hit = [name for name in names if name in nodes and any(i in dq for i in nodes[name].input[1:2])]
    return len(hit) / len(names)


def test_groups_cover_the_network(fp32):
    groups = cdinet_groups(fp32)
    assert set(groups) == {"first_convs", "rde", "dse_attention", "decoder", "transform"}
    assert len(groups["first_convs"]) == 2  # the first conv of the RGB and of the depth stream
    assert all("/ddr/" in n for n in groups["decoder"]) and len(groups["decoder"]) >= 20


def test_greedy_search_keeps_only_the_harmful_group_in_float(fp32):
    groups = cdinet_groups(fp32)
    rng = np.random.default_rng(0)
    feeds = [
        {"rgb": rng.standard_normal((1, 3, 32, 32), np.float32), "depth": rng.random((1, 1, 32, 32), np.float32)}
        for _ in range(2)
    ]

    def score(model):
        return {
            "s_measure_drop": 0.05 * quantized_fraction(model, groups["decoder"])
            + 0.001 * quantized_fraction(model, groups["rde"])
        }

    model, policy = search_cdinet_int8(fp32, feeds, score, budget=0.01, progress=lambda _: None)
    assert policy["float_groups"] == ["decoder"]
    assert policy["excluded_nodes"] == groups["decoder"]
    assert policy["search"]["met"] and policy["search"]["tries"][0]["float_groups"] == "none"
    assert len(policy["search"]["tries"]) == 1 + len(groups)  # the default, then each group once
    assert quantized_fraction(model, groups["decoder"]) == 0 and quantized_fraction(model, groups["rde"]) == 1
    onnx.checker.check_model(model, full_check=True)
