"""Backbones: exact parameter counts of the CIFAR-style ResNet18 (REFERENCE.md section 4), compared
with torchvision's own resnet18 as an independent oracle; shapes; features() is what the head sees;
seeded construction."""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn
from torchvision.models.resnet import BasicBlock

from nclab.nets.backbones import (
    Network,
    build_network,
    count_parameters,
    mlp,
    parameter_summary,
    resnet18_cifar,
)
from nclab.nets.heads import ETFHead, NormalizedHead

K = 10


def _torchvision_cifar_resnet18(num_classes=10):
    """The oracle: torchvision's resnet18 with the CIFAR stem (3x3 stride-1 conv, no max-pool)."""
    net = torchvision.models.resnet18(num_classes=num_classes)
    net.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
    net.maxpool = nn.Identity()
    return net


def test_resnet18_learned_head_has_11173962_parameters():
    net = build_network("resnet18", "learned", K, in_channels=3)
    assert count_parameters(net) == 11_173_962
    assert count_parameters(_torchvision_cifar_resnet18()) == 11_173_962


def test_resnet18_with_d_equal_K_has_8859862_parameters():
    net = build_network("resnet18", "learned", K, feature_dim=K, in_channels=3)
    assert count_parameters(net) == 8_859_862
    # the reduction of REFERENCE.md section 4 (-20.7 %)
    assert round(100 * (1 - 8_859_862 / 11_173_962), 1) == 20.7
    # the saving is in the last block: conv2 512->d, bn2 d, a 1x1 conv + BN shortcut 512->d, head d x K + K
    d = K
    last = net.backbone.layer4[1]
    assert isinstance(last, BasicBlock)
    assert last.conv2.weight.shape == (d, 512, 3, 3) and last.bn2.num_features == d
    assert last.downsample[0].weight.shape == (d, 512, 1, 1) and last.downsample[1].num_features == d
    saved = (512 * 512 * 9 - 512 * d * 9) + 2 * (512 - d) - (512 * d + 2 * d) + ((512 * K + K) - (d * K + K))
    assert 11_173_962 - saved == 8_859_862


def test_backbone_is_key_compatible_with_torchvision_resnet18():
    ours = resnet18_cifar(in_channels=3).state_dict()
    theirs = {k: v for k, v in _torchvision_cifar_resnet18().state_dict().items() if not k.startswith("fc.")}
    assert ours.keys() == theirs.keys()
    assert all(ours[k].shape == theirs[k].shape for k in ours)
    blocks = [m for m in resnet18_cifar().modules() if isinstance(m, BasicBlock)]
    assert len(blocks) == 8


@pytest.mark.parametrize("d", [None, K])
def test_trainable_counts_with_the_fixed_etf_head(d):
    width = 512 if d is None else d
    learned = count_parameters(build_network("resnet18", "learned", K, feature_dim=d, in_channels=3))
    etf_bias = build_network("resnet18", "etf", K, feature_dim=d, in_channels=3, head_bias=True)
    etf = build_network("resnet18", "etf", K, feature_dim=d, in_channels=3)
    # the ETF head removes K*d from training (and K more when it has no bias)
    assert count_parameters(etf_bias, trainable_only=True) == learned - K * width
    assert count_parameters(etf, trainable_only=True) == learned - K * width - K
    s = parameter_summary(etf_bias)
    assert s == {
        "total": learned,
        "trainable": learned - K * width,
        "fixed_classifier": K * width,
        "backbone": learned - K * width - K,
        "head_trainable": K,
    }
    assert all(p is not etf.head.weight for p in etf.parameters())


def test_trainable_count_values_for_d_equal_K():
    net = build_network("resnet18", "etf", K, feature_dim=K, in_channels=3, head_bias=True)
    assert count_parameters(net, trainable_only=True) == 8_859_762
    net = build_network("resnet18", "etf", K, feature_dim=K, in_channels=3)
    assert count_parameters(net, trainable_only=True) == 8_859_752


def test_count_parameters_trainable_only_skips_frozen():
    net = nn.Linear(4, 3)
    net.bias.requires_grad_(False)
    assert count_parameters(net) == 15 and count_parameters(net, trainable_only=True) == 12


def test_one_input_channel_has_fewer_stem_weights():
    one = count_parameters(build_network("resnet18", "learned", K, in_channels=1))
    assert one == 11_173_962 - 2 * 9 * 64


_SHAPE_CASES = [("resnet18", 1, 28, "learned"), ("resnet18", 3, 32, "etf"), ("resnet18", 1, 28, "normalized")] + [
    ("mlp", c, s, h) for c, s in [(1, 28), (3, 32)] for h in ("learned", "etf", "normalized")
]


@pytest.mark.parametrize("model,channels,size,head", _SHAPE_CASES)
def test_forward_shapes_and_features_equal_backbone_output(model, channels, size, head):
    net = build_network(model, head, K, feature_dim=K, in_channels=channels, image_size=size, seed=1)
    net.eval()
    x = torch.randn(3, channels, size, size)
    with torch.no_grad():
        h = net.features(x)
        logits, h2 = net(x, return_features=True)
        direct = net.backbone(x)
    assert logits.shape == (3, K) and h.shape == (3, K)
    assert torch.equal(h, direct) and torch.equal(h2, h)
    assert torch.equal(logits, net.head(h))
    assert net.num_classes == K and net.feature_dim == K


def test_resnet_default_width_and_train_mode_batch():
    net = build_network("resnet18", "learned", K)
    out, h = net(torch.randn(4, 1, 28, 28), return_features=True)
    assert h.shape == (4, 512) and out.shape == (4, K)
    out.sum().backward()  # gradients flow through the whole network
    assert net.backbone.conv1.weight.grad is not None


def test_mlp_parameter_count_from_layer_sizes():
    net = mlp(784, 10, hidden=64, depth=3)
    # Linear (no bias, BN follows) + BN (weight, bias) per layer
    assert count_parameters(net) == (784 * 64 + 2 * 64) + (64 * 64 + 2 * 64) + (64 * 10 + 2 * 10)
    assert net(torch.randn(5, 1, 28, 28)).shape == (5, 10)
    assert count_parameters(mlp(784, 10, depth=1, batch_norm=False)) == 784 * 10 + 10


def test_build_network_is_seeded_and_leaves_global_rng_alone():
    state = torch.random.get_rng_state()
    a = build_network("mlp", "normalized", K, feature_dim=16, seed=3, hidden=32)
    b = build_network("mlp", "normalized", K, feature_dim=16, seed=3, hidden=32)
    c = build_network("mlp", "normalized", K, feature_dim=16, seed=4, hidden=32)
    assert torch.equal(torch.random.get_rng_state(), state)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not all(torch.equal(sa[k], sc[k]) for k in sa)
    assert isinstance(a.head, NormalizedHead) and a.head.tau == 1.0


def test_build_network_validation():
    with pytest.raises(ValueError, match="allowed: resnet18, mlp"):
        build_network("vgg11", "learned", K)
    with pytest.raises(ValueError, match="d >= K-1 = 9"):
        build_network("resnet18", "etf", K, feature_dim=5)
    with pytest.raises(ValueError, match="allowed: learned, etf, normalized"):
        build_network("mlp", "fixed", K)
    with pytest.raises(ValueError, match="feature_dim"):
        resnet18_cifar(feature_dim=0)


def test_etf_network_state_dict_records_the_frame():
    net = build_network("mlp", "etf", K, feature_dim=K, seed=2, hidden=16)
    assert isinstance(net.head, ETFHead) and isinstance(net, Network)
    assert torch.equal(net.state_dict()["head.weight"], net.head.weight)
