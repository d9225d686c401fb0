"""Backbones (feature extractors) and the :class:`Network` = backbone + head.

``resnet18_cifar``
    ResNet18 in the CIFAR style (He et al. 2016; the variant used by Papyan et al. 2020 and Zhu et
    al. 2021): a 3x3 stride-1 stem convolution with 64 channels, batch norm and ReLU, **no max-pool**,
    then four stages of two ``torchvision.models.resnet.BasicBlock`` each (64, 128, 256, 512 channels;
    stride 2 and a 1x1 conv + BN projection shortcut at the start of stages 2-4), global average
    pooling, flatten -> (B, 512) features.  With ``feature_dim=d`` the **last** block's second 3x3
    convolution and its batch norm output d channels and its shortcut becomes a 1x1 conv + BN
    projection from 512 to d, so the features are (B, d).  This is how the memory claim of Zhu et
    al. 2021 is realised (REFERENCE.md section 4): with K = 10 and a learned d x K + K head,

        feature_dim=None (d = 512): 11,173,962 parameters (3 input channels)
        feature_dim=10   (d = K)  :  8,859,862 parameters (-20.7 %)

    and a fixed simplex-ETF head removes another K*d (= 100) from training.  One input channel
    (MNIST) has 2*9*64 = 1,152 fewer stem weights than three.  :func:`parameter_summary` reports the
    total, trainable and fixed-classifier counts of a network.

``mlp``
    Flatten, then ``depth`` fully connected layers (hidden width ``hidden``, the last one with
    ``feature_dim`` outputs), each followed by batch norm and ReLU.

Initialisation follows torchvision's ResNet (Kaiming-normal fan-out convolutions, BN weight 1 and
bias 0); :func:`build_network` draws all initial weights from ``seed`` without touching torch's
global random state, so the same call builds the same network on every process.

Example
-------
>>> from nclab.nets.backbones import build_network, count_parameters
>>> net = build_network("resnet18", "learned", num_classes=10, feature_dim=10, in_channels=3)
>>> count_parameters(net)
8859862
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torchvision.models.resnet import BasicBlock, conv1x1, conv3x3

from nclab.nets.heads import ETFHead, make_head

__all__ = [
    "MODELS",
    "ProjectingBasicBlock",
    "resnet18_cifar",
    "mlp",
    "Network",
    "build_network",
    "count_parameters",
    "parameter_summary",
]

#: Backbone names accepted by :func:`build_network` (and ``nclab train --model``).
MODELS = ("resnet18", "mlp")


def _check_pos_int(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return value


class ProjectingBasicBlock(BasicBlock):
    """torchvision's ``BasicBlock`` whose second 3x3 convolution (and its BN) outputs
    ``out_planes`` channels instead of ``planes``; the shortcut is then a 1x1 conv + BN projection
    from ``inplanes`` to ``out_planes`` (stride ``stride``).  ``forward`` is BasicBlock's own:
    ``relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x))``."""

    def __init__(self, inplanes: int, planes: int, out_planes: int, stride: int = 1) -> None:
        downsample = None
        if stride != 1 or inplanes != out_planes:
            downsample = nn.Sequential(conv1x1(inplanes, out_planes, stride), nn.BatchNorm2d(out_planes))
        super().__init__(inplanes, planes, stride=stride, downsample=downsample)
        self.conv2 = conv3x3(planes, out_planes)
        self.bn2 = nn.BatchNorm2d(out_planes)
        self.out_planes = out_planes


class _ResNetCIFAR(nn.Module):
    def __init__(self, in_channels: int, widths: tuple[int, ...], blocks: tuple[int, ...], feature_dim: int | None):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, widths[0], kernel_size=3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.relu = nn.ReLU(inplace=True)
        inplanes = widths[0]
        stages = []
        for s, (planes, n) in enumerate(zip(widths, blocks)):
            stride = 1 if s == 0 else 2
            layers = []
            for b in range(n):
                last = s == len(widths) - 1 and b == n - 1
                out = feature_dim if (last and feature_dim is not None) else planes
                st = stride if b == 0 else 1
                if out != planes:
                    layers.append(ProjectingBasicBlock(inplanes, planes, out, stride=st))
                else:
                    down = None
                    if st != 1 or inplanes != planes:
                        down = nn.Sequential(conv1x1(inplanes, planes, st), nn.BatchNorm2d(planes))
                    layers.append(BasicBlock(inplanes, planes, stride=st, downsample=down))
                inplanes = out
            stages.append(nn.Sequential(*layers))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.feature_dim = inplanes
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: Tensor) -> Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return torch.flatten(self.avgpool(x), 1)


def resnet18_cifar(in_channels: int = 3, feature_dim: int | None = None) -> nn.Module:
    """CIFAR-style ResNet18 feature extractor, (B, C, H, W) -> (B, d) (module docstring).

    Parameters
    ----------
    in_channels : 1 (MNIST, Fashion-MNIST) or 3 (CIFAR); any positive integer works.
    feature_dim : None keeps d = 512; otherwise the last block outputs d = feature_dim channels
        (d = K for the memory claim of REFERENCE.md section 4).

    The module has attribute ``feature_dim`` (= d).  Inputs of 28x28 or 32x32 give 4x4 maps
    before the global average pool; any size >= 8 works.
    """
    _check_pos_int("in_channels", in_channels)
    if feature_dim is not None:
        _check_pos_int("feature_dim", feature_dim)
    return _ResNetCIFAR(in_channels, (64, 128, 256, 512), (2, 2, 2, 2), feature_dim)


class _MLP(nn.Sequential):
    def __init__(self, in_features: int, feature_dim: int, hidden: int, depth: int, batch_norm: bool):
        layers: list[nn.Module] = [nn.Flatten()]
        width = in_features
        for i in range(depth):
            out = feature_dim if i == depth - 1 else hidden
            layers.append(nn.Linear(width, out, bias=not batch_norm))
            if batch_norm:
                layers.append(nn.BatchNorm1d(out))
            layers.append(nn.ReLU(inplace=True))
            width = out
        super().__init__(*layers)
        self.feature_dim = feature_dim


def mlp(in_features: int, feature_dim: int, hidden: int = 512, depth: int = 3, batch_norm: bool = True) -> nn.Module:
    """Multilayer perceptron feature extractor: flatten, then ``depth`` layers
    ``Linear -> BatchNorm1d -> ReLU`` of widths hidden, ..., hidden, feature_dim (a Linear followed
    by batch norm has no bias: BN's shift replaces it).  (B, ...) with prod(...) = in_features ->
    (B, feature_dim)."""
    _check_pos_int("in_features", in_features)
    _check_pos_int("feature_dim", feature_dim)
    _check_pos_int("hidden", hidden)
    _check_pos_int("depth", depth)
    return _MLP(in_features, feature_dim, hidden, depth, batch_norm)


class Network(nn.Module):
    """Backbone + head.  ``forward(x)`` -> logits (B, K); ``features(x)`` -> the backbone's
    penultimate features (B, d), i.e. exactly what the head receives.

    ``forward(x, return_features=True)`` returns ``(logits, features)`` from one pass (use it in
    training to log collapse without a second forward).  The NC metrics should be computed on
    ``head.metric_features(features)`` with ``head.classifier_weight()`` / ``classifier_bias()``
    (for the normalized head these are the unit features and tau * W).

    Attributes: ``backbone``, ``head``, ``num_classes``, ``feature_dim``, ``model`` and
    ``head_kind`` (names as given to :func:`build_network`).
    """

    def __init__(self, backbone: nn.Module, head: nn.Module, *, model: str = "custom", head_kind: str = "custom"):
        super().__init__()
        self.backbone = backbone
        self.head = head
        self.num_classes = head.K
        self.feature_dim = head.d
        self.model = model
        self.head_kind = head_kind

    def features(self, x: Tensor) -> Tensor:
        return self.backbone(x)

    def forward(self, x: Tensor, return_features: bool = False):
        h = self.backbone(x)
        logits = self.head(h)
        return (logits, h) if return_features else logits


def build_network(
    model: str,
    head: str,
    num_classes: int,
    feature_dim: int | None = None,
    in_channels: int = 1,
    image_size: int = 28,
    tau: float = 1.0,
    seed: int = 0,
    *,
    head_bias: bool | None = None,
    hidden: int = 512,
    depth: int = 3,
) -> Network:
    """Build a :class:`Network` by name.

    Parameters
    ----------
    model : "resnet18" (:func:`resnet18_cifar`) or "mlp" (:func:`mlp` on in_channels*image_size^2
        inputs).
    head : "learned", "etf" or "normalized" (:func:`nclab.nets.heads.make_head`).
    num_classes : K.
    feature_dim : d; None means 512 for the ResNet (its native width) and ``hidden`` for the MLP.
        The ETF head needs d >= K-1.
    in_channels, image_size : input shape (C, image_size, image_size).
    tau : temperature of the normalized head.
    seed : seeds every initial weight (backbone, head, ETF rotation); torch's global random
        state is left as it was.
    head_bias : None = the head's default (learned: with bias; etf: without; normalized: none).
    hidden, depth : width and number of layers of the MLP.
    """
    if not isinstance(model, str) or model.lower() not in MODELS:
        raise ValueError(f"unknown model {model!r}; allowed: {', '.join(MODELS)}")
    model = model.lower()
    _check_pos_int("num_classes", num_classes)
    _check_pos_int("image_size", image_size)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        if model == "resnet18":
            backbone = resnet18_cifar(in_channels=in_channels, feature_dim=feature_dim)
        else:
            _check_pos_int("in_channels", in_channels)
            d = hidden if feature_dim is None else feature_dim
            backbone = mlp(in_channels * image_size * image_size, d, hidden=hidden, depth=depth)
        h = make_head(head, backbone.feature_dim, num_classes, tau=tau, seed=seed, bias=head_bias)
    return Network(backbone, h, model=model, head_kind=str(head).lower())


def count_parameters(module: nn.Module, trainable_only: bool = False) -> int:
    """Number of scalar parameters of ``module`` (``.parameters()``; shared ones counted once).

    ``trainable_only=True`` counts only those with ``requires_grad``.  Buffers (batch-norm running
    statistics, the fixed ETF classifier) are not parameters and are never counted here; see
    :func:`parameter_summary` for the fixed classifier."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


def parameter_summary(network: Network) -> dict[str, int]:
    """Parameter counts of a network, as a JSON-friendly dict:

    ``total``: all weights of the model including a fixed ETF classifier (K*d), i.e. the size of
    the same architecture with a learned classifier of the same bias setting; ``trainable``:
    what the optimizer updates; ``fixed_classifier``: K*d for an ETF head, else 0;
    ``backbone``, ``head_trainable``: the parts."""
    fixed = network.head.weight.numel() if isinstance(network.head, ETFHead) else 0
    trainable = count_parameters(network, trainable_only=True)
    return {
        "total": count_parameters(network) + fixed,
        "trainable": trainable,
        "fixed_classifier": fixed,
        "backbone": count_parameters(network.backbone),
        "head_trainable": count_parameters(network.head, trainable_only=True),
    }
