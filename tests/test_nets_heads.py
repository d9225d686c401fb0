"""Heads: the fixed simplex-ETF classifier is exact and untrained, the normalized classifier stays on
the oblique manifold under the documented update, and every head obeys
logits = metric_features(h) @ classifier_weight().T + classifier_bias()."""

from __future__ import annotations

import io

import pytest
import torch
from torch import nn

from nclab.nets.heads import (
    HEADS,
    ETFHead,
    LearnedHead,
    NormalizedHead,
    attach_riemannian_hooks,
    make_head,
    project_heads_,
)


def _simplex_gram(K, dtype):
    return K / (K - 1) * (torch.eye(K, dtype=dtype) - torch.ones(K, K, dtype=dtype) / K)


@pytest.mark.parametrize("K,d", [(10, 10), (10, 9), (5, 32), (3, 2)])
@pytest.mark.parametrize("seed", [None, 7])
def test_etf_weight_has_simplex_gram_float32(K, d, seed):
    W = ETFHead(d, K, seed=seed).weight
    assert W.dtype == torch.float32 and W.shape == (K, d)
    assert torch.allclose(W @ W.T, _simplex_gram(K, torch.float32), atol=1e-6, rtol=0)


@pytest.mark.parametrize("K,d", [(10, 10), (10, 9), (4, 20)])
def test_etf_weight_has_simplex_gram_float64(K, d):
    W = ETFHead(d, K, seed=3, dtype=torch.float64).weight
    assert (W @ W.T - _simplex_gram(K, torch.float64)).abs().max() < 1e-12


def test_etf_rotation_depends_on_seed_and_is_reproducible():
    a, b, c = ETFHead(10, 10, seed=1).weight, ETFHead(10, 10, seed=1).weight, ETFHead(10, 10, seed=2).weight
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)


def test_etf_weight_is_a_saved_buffer_not_a_parameter():
    head = ETFHead(10, 10, seed=0)
    assert "weight" in dict(head.named_buffers())
    assert all(p is not head.weight for p in head.parameters())
    assert list(head.parameters()) == []
    assert not head.weight.requires_grad
    sd = head.state_dict()
    assert "weight" in sd and torch.equal(sd["weight"], head.weight)
    # a round trip through torch.save restores the same frame into a head built with another seed
    buf = io.BytesIO()
    torch.save(sd, buf)
    buf.seek(0)
    other = ETFHead(10, 10, seed=99)
    other.load_state_dict(torch.load(buf))
    assert torch.equal(other.weight, head.weight)


def test_etf_weight_gets_no_gradient_and_is_not_optimised():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 10), ETFHead(10, 10, bias=True, seed=0))
    head = model[1]
    before = head.weight.clone()
    opt = torch.optim.SGD(model.parameters(), lr=0.5, momentum=0.9, weight_decay=0.1)
    assert all(p is not head.weight for g in opt.param_groups for p in g["params"])
    x, y = torch.randn(8, 6), torch.arange(8) % 10
    for _ in range(3):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        assert head.weight.grad is None
        assert head.bias.grad is not None  # the optional bias is trainable
        opt.step()
    assert torch.equal(head.weight, before)


def test_etf_with_too_small_d_raises_naming_d_and_K():
    with pytest.raises(ValueError, match=r"K=10.*d >= K-1 = 9.*d=8"):
        ETFHead(8, 10)
    with pytest.raises(ValueError, match="d=8"):
        make_head("etf", 8, 10)


def _sgd_step_documented(head, model, opt, x, y):
    opt.zero_grad()
    nn.functional.cross_entropy(model(x), y).backward()
    head.project_grad_()
    opt.step()
    head.project_(opt)


def test_normalized_head_keeps_unit_rows_after_sgd_with_momentum_and_weight_decay():
    torch.manual_seed(0)
    head = NormalizedHead(16, 10, tau=5.0, seed=0)
    model = nn.Sequential(nn.Linear(8, 16), head)
    opt = torch.optim.SGD(model.parameters(), lr=0.5, momentum=0.9, weight_decay=5e-2)
    x, y = torch.randn(32, 8), torch.arange(32) % 10
    w0 = head.weight.detach().clone()
    for _ in range(5):
        _sgd_step_documented(head, model, opt, x, y)
        norms = head.weight.detach().norm(dim=1)
        assert torch.allclose(norms, torch.ones(10), atol=1e-6, rtol=0)
        # the momentum buffer was transported to the tangent space at the new W
        buf = opt.state[head.weight]["momentum_buffer"]
        assert (buf * head.weight.detach()).sum(dim=1).abs().max() < 1e-5
    assert not torch.allclose(head.weight.detach(), w0)  # it did move


def test_normalized_head_hooks_do_the_same_update():
    torch.manual_seed(0)
    x, y = torch.randn(32, 8), torch.arange(32) % 10

    def run(use_hooks):
        torch.manual_seed(1)
        head = NormalizedHead(16, 10, tau=3.0, seed=0)
        model = nn.Sequential(nn.Linear(8, 16), head)
        opt = torch.optim.SGD(model.parameters(), lr=0.3, momentum=0.9, weight_decay=1e-2)
        if use_hooks:
            assert len(attach_riemannian_hooks(opt, model)) == 2
        for _ in range(4):
            if use_hooks:
                opt.zero_grad()
                nn.functional.cross_entropy(model(x), y).backward()
                opt.step()
            else:
                _sgd_step_documented(head, model, opt, x, y)
        return head.weight.detach()

    with_hooks, manual = run(True), run(False)
    assert torch.allclose(with_hooks.norm(dim=1), torch.ones(10), atol=1e-6)
    assert torch.allclose(with_hooks, manual, atol=1e-6)


def test_project_heads_finds_nested_normalized_heads():
    head = NormalizedHead(4, 3, seed=0)
    model = nn.Sequential(nn.Linear(2, 4), head)
    with torch.no_grad():
        head.weight.mul_(3.0)
    assert project_heads_(model) == 1
    assert torch.allclose(head.weight.norm(dim=1), torch.ones(3), atol=1e-6)
    assert project_heads_(nn.Linear(2, 2)) == 0


def test_normalized_logits_are_tau_times_cosines_computed_independently():
    torch.manual_seed(0)
    tau = 2.5
    head = NormalizedHead(7, 5, tau=tau, seed=3, dtype=torch.float64)
    h = torch.randn(11, 7, dtype=torch.float64) * 10
    W = head.weight.detach()
    cos = torch.empty(11, 5, dtype=torch.float64)
    for i in range(11):
        for k in range(5):
            cos[i, k] = torch.dot(h[i], W[k]) / (h[i].norm() * W[k].norm())
    assert torch.allclose(head(h), tau * cos, atol=1e-12)
    assert torch.allclose(head.weight.norm(dim=1), torch.ones(5, dtype=torch.float64), atol=1e-12)


def test_normalized_head_validation():
    with pytest.raises(ValueError, match="tau"):
        NormalizedHead(4, 3, tau=0.0)
    with pytest.raises(ValueError, match="no bias"):
        make_head("normalized", 4, 3, bias=True)


@pytest.mark.parametrize("kind", HEADS)
def test_every_head_logits_are_metric_features_times_classifier(kind):
    torch.manual_seed(0)
    head = make_head(kind, 12, 10, tau=4.0, seed=0, bias=None if kind == "normalized" else True)
    h = torch.randn(6, 12)
    W, b = head.classifier_weight(), head.classifier_bias()
    assert W.shape == (10, 12) and not W.requires_grad
    expected = head.metric_features(h) @ W.T + (0 if b is None else b)
    assert torch.allclose(head(h), expected, atol=1e-5)
    assert (b is None) == (kind == "normalized")


def test_make_head_defaults_and_unknown_kind():
    assert isinstance(make_head("learned", 8, 4), LearnedHead)
    assert make_head("learned", 8, 4).bias is not None
    assert make_head("etf", 8, 4).bias is None
    assert isinstance(make_head("ETF", 8, 4), ETFHead)
    with pytest.raises(ValueError, match="learned, etf, normalized"):
        make_head("cosine", 8, 4)


def test_learned_head_matches_nn_linear_parameter_count():
    head, ref = LearnedHead(512, 10), nn.Linear(512, 10)
    assert sum(p.numel() for p in head.parameters()) == sum(p.numel() for p in ref.parameters()) == 5130


@pytest.mark.gpu
def test_heads_on_cuda_buffer_moves_and_update_stays_on_the_sphere():
    from nclab.nets.backbones import build_network

    dev = torch.device("cuda")
    net = build_network("resnet18", "etf", 10, feature_dim=10, in_channels=1, seed=0).to(dev)
    assert net.head.weight.device.type == "cuda"
    W = net.head.weight.double()
    assert (W @ W.T - _simplex_gram(10, torch.float64).to(dev)).abs().max() < 1e-6
    x, y = torch.randn(8, 1, 28, 28, device=dev), torch.arange(8, device=dev)
    nn.functional.cross_entropy(net(x), y).backward()
    assert net.head.weight.grad is None

    net = build_network("mlp", "normalized", 10, feature_dim=16, tau=4.0, seed=0).to(dev)
    opt = torch.optim.SGD(net.parameters(), lr=0.5, momentum=0.9, weight_decay=1e-2)
    attach_riemannian_hooks(opt, net)
    for _ in range(3):
        opt.zero_grad()
        nn.functional.cross_entropy(net(x), y).backward()
        opt.step()
    norms = net.head.weight.detach().norm(dim=1)
    assert torch.allclose(norms, torch.ones_like(norms), atol=1e-6)


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("K,d", [(10, 10), (10, 12), (4, 64)])
def test_rotated_etf_leaves_every_class_reachable_by_relu_features(K, d, seed):
    """With a ones-preserving rotation the rows still sum to zero, so h = 1 + w_k/2 (non-negative,
    as after a ReLU) is classified as k, for every class."""
    W = ETFHead(d, K, seed=seed, dtype=torch.float64).weight
    assert float(W.sum(1).abs().max()) < 1e-12
    H = 1.0 + 0.5 * W
    assert bool((H >= 0).all())
    assert torch.equal((H @ W.T).argmax(1), torch.arange(K))
    assert torch.allclose(W @ W.T, K / (K - 1) * (torch.eye(K, dtype=torch.float64) - 1.0 / K), atol=1e-12)
