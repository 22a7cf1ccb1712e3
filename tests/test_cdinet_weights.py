"""CDINet weight loading: the official checkpoint layout (strict) and ImageNet VGG16 initialisation."""

from __future__ import annotations

import pytest
import torch
import torchvision
from cdinet_reference import official_keys, random_state_dict
from torch import nn

from edge_mm.cdinet import CDINet, build, from_official, load_vgg16_imagenet
from edge_mm.cdinet.weights import vgg16_key_map
from edge_mm.errors import WeightsError

torch.set_num_threads(2)


@pytest.fixture(scope="module")
def official_state():
    return random_state_dict(official_keys(), seed=7)


def _assert_loaded(model: CDINet, state) -> None:
    own = model.state_dict()
    assert own.keys() == state.keys()
    assert all(torch.equal(own[k], state[k]) for k in state)
    assert not model.training


# ---------------------------------------------------------------------------------------------
# from_official


def test_state_dict_from_official_key_file_loads_strictly(official_state):
    _assert_loaded(from_official(official_state), official_state)


def test_official_checkpoint_file_loads(tmp_path, official_state):
    path = tmp_path / "CDINet.pth"
    torch.save(official_state, path)
    _assert_loaded(from_official(path), official_state)


@pytest.mark.parametrize("wrap", ["state_dict", "model", "module-prefix", "wrapped-and-prefixed"])
def test_common_checkpoint_wrappers_are_removed(tmp_path, wrap):
    # a small width keeps the files small; unwrapping does not depend on the width
    model = build("cdinet-xs")
    state = model.state_dict()
    prefixed = {f"module.{k}": v for k, v in state.items()}
    content = {
        "state_dict": {"state_dict": state, "epoch": 120},
        "model": {"model": state, "optimizer": {"lr": 1e-4}},
        "module-prefix": prefixed,
        "wrapped-and-prefixed": {"state_dict": prefixed},
    }[wrap]
    path = tmp_path / "checkpoint.pth"
    torch.save(content, path)
    _assert_loaded(from_official(str(path), width=model.width), state)
    _assert_loaded(from_official(content, width=model.width), state)


def test_missing_key_is_named(official_state):
    state = dict(official_state)
    del state["dse_layer4.ca2.fc.2.bias"]
    with pytest.raises(WeightsError, match=r"1 missing key\(s\): dse_layer4\.ca2\.fc\.2\.bias") as info:
        from_official(state)
    assert "\n" not in str(info.value)


def test_unexpected_key_is_named(official_state):
    state = dict(official_state, **{"ddr.extra_head.weight": torch.zeros(1)})
    with pytest.raises(WeightsError, match=r"1 unexpected key\(s\): ddr\.extra_head\.weight"):
        from_official(state)


def test_many_missing_keys_are_counted(official_state):
    state = {k: v for k, v in official_state.items() if not k.startswith("vgg_d.")}
    with pytest.raises(WeightsError, match=r"26 missing key\(s\): vgg_d\.conv1\.conv1_1\.weight, .*\(26 in all\)"):
        from_official(state)


def test_shape_mismatch_names_key_and_both_shapes(official_state):
    state = dict(official_state, **{"conv_mid.weight": torch.zeros(256, 512, 3, 3)})
    expected = r"conv_mid\.weight is \(256, 512, 3, 3\) in the file but \(512, 512, 3, 3\) in the model"
    with pytest.raises(WeightsError, match=expected):
        from_official(state)


def test_checkpoint_of_another_width_needs_that_width():
    small = build("cdinet-s").state_dict()
    with pytest.raises(WeightsError, match="shape mismatch"):
        from_official(small)
    _assert_loaded(from_official(small, width=build("cdinet-s").width), small)


def test_corrupt_file_names_the_file(tmp_path, official_state):
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"\x00not a checkpoint" * 100)
    truncated = tmp_path / "truncated.pth"
    torch.save({"conv_mid.bias": official_state["conv_mid.bias"]}, truncated)
    truncated.write_bytes(truncated.read_bytes()[:200])
    for path, what in ((garbage, "is not a checkpoint"), (truncated, "is truncated")):
        with pytest.raises(WeightsError, match=rf"{path.name} {what}") as info:
            from_official(path)
        assert "\n" not in str(info.value) and "torch.load" not in str(info.value)
    with pytest.raises(WeightsError, match="does not exist"):
        from_official(tmp_path / "absent.pth")


def test_pickled_module_is_refused_not_unpickled(tmp_path):
    path = tmp_path / "whole_model.pth"
    torch.save(nn.Linear(2, 2), path)  # a pickled object, not a state dict: weights_only refuses it
    with pytest.raises(WeightsError, match=r"whole_model\.pth is a pickle that would run code"):
        from_official(path)


def test_non_tensor_values_are_rejected(tmp_path):
    path = tmp_path / "list.pth"
    torch.save([1, 2, 3], path)
    with pytest.raises(WeightsError, match="list"):
        from_official(path)
    with pytest.raises(WeightsError, match="not tensors"):
        from_official({"conv_mid.weight": [1.0]})


# ---------------------------------------------------------------------------------------------
# ImageNet VGG16


def _torchvision_vgg16_state(batch_norm: bool = False):
    """A state dict laid out like torchvision's vgg16 (features.N.*), built with torchvision itself.
    The classifier (102 M parameters in the real file) is represented by small stand-ins: it is ignored."""
    torch.manual_seed(0)
    features = torchvision.models.vgg.make_layers(torchvision.models.vgg.cfgs["D"], batch_norm=batch_norm)
    state = {f"features.{k}": v for k, v in features.state_dict().items()}
    state.update({f"classifier.{i}.{p}": torch.zeros(4) for i in (0, 3, 6) for p in ("weight", "bias")})
    return features.eval(), state


def test_vgg16_imagenet_loads_into_both_streams(tmp_path):
    features, state = _torchvision_vgg16_state()
    path = tmp_path / "vgg16-397923af.pth"
    torch.save(state, path)
    model = load_vgg16_imagenet(CDINet(), path)
    for stream in ("vgg_r", "vgg_d"):
        own = model.state_dict()
        for src, dst in vgg16_key_map(stream).items():
            assert torch.equal(own[dst], state[src]), (src, dst)
    # The key map is right if a stream with MaxPool computes what torchvision's features[:-1]
    # computes (pool5 dropped). The depth stream's first conv takes the same 3-channel weights.
    x = torch.randn(1, 3, 32, 32)
    for stream in (model.vgg_r, model.vgg_d):
        with_max = stream
        for level in range(2, 6):
            setattr(getattr(with_max, f"conv{level}"), f"pool{level - 1}", nn.MaxPool2d(2, 2))
        with torch.no_grad():
            assert torch.allclose(with_max(x), features[:-1](x), atol=1e-5)


def test_vgg16_keys_are_checked(tmp_path):
    _, state = _torchvision_vgg16_state()
    del state["features.28.weight"]
    path = tmp_path / "partial.pth"
    torch.save(state, path)
    with pytest.raises(WeightsError, match=r"partial\.pth .*missing key\(s\): features\.28\.weight"):
        load_vgg16_imagenet(CDINet(), path)

    _, bn_state = _torchvision_vgg16_state(batch_norm=True)
    bn_path = tmp_path / "vgg16_bn.pth"
    torch.save(bn_state, bn_path)
    with pytest.raises(WeightsError, match="vgg16_bn"):
        load_vgg16_imagenet(CDINet(), bn_path)

    with pytest.raises(WeightsError, match="full-width"):
        load_vgg16_imagenet(build("cdinet-s"), path)
