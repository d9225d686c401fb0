"""nclab.track: the NC metrics of a model's own features, caught by a forward hook.

Oracle: the independent float64 two-pass formulas of ``reference_nc.reference_metrics`` applied
to features extracted by an explicit forward pass through the model's own modules (same batches,
so the float32 features are the very numbers the hook saw).  Also checked: the layer and
classifier found automatically, sequence features with an ignore index, bfloat16 features,
next-token labels, classes absent from the data, and that hooks and modes are restored after
an exception.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from nclab.metrics import METRIC_NAMES, EmptyClassesError
from nclab.track import NeuralCollapseTracker, find_classifier, is_causal_lm, track
from reference_nc import reference_metrics

REL = 1e-10


def assert_metrics_equal(res, want, rel=REL, names=METRIC_NAMES):
    got = res.as_dict()
    for name in names:
        if want[name] is None:
            assert got[name] is None, name
        else:
            assert math.isclose(got[name], want[name], rel_tol=rel, abs_tol=1e-13), (name, got[name], want[name])


def no_hooks(model: nn.Module) -> bool:
    return all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())


def mlp(d_in=6, d=12, K=4, seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(d_in, d), nn.BatchNorm1d(d), nn.ReLU(), nn.Linear(d, K))


def mlp_data(K=4, n=30, d_in=6, batch=20, seed=1):
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(K * n) % K
    x = torch.randn(K * n, d_in, generator=g) + 2.0 * torch.nn.functional.one_hot(y, d_in).float()
    return list(zip(x.split(batch), y.split(batch)))


def test_resnet18_matches_an_explicit_forward_pass_and_the_float64_reference(one_thread):
    from torchvision.models import resnet18

    torch.manual_seed(0)
    net = resnet18(weights=None, num_classes=10)  # built from code, random weights, no download
    net.train()
    g = torch.Generator().manual_seed(0)
    x = torch.randn(120, 3, 32, 32, generator=g)
    y = torch.randperm(120, generator=g) % 10
    loader = list(zip(x.split(40), y.split(40)))

    res = track(net, loader, nc4=True)  # layer found automatically: the input of net.fc
    assert net.training and no_hooks(net)  # modes and hooks restored

    body = nn.Sequential(*list(net.children())[:-1], nn.Flatten()).eval()  # explicit forward pass
    with torch.no_grad():
        feats = torch.cat([body(xb) for xb, _ in loader])
    assert feats.shape == (120, 512)
    want = reference_metrics(feats.double().numpy(), y.numpy(), 10, net.fc.weight.detach().double().numpy(),
                             net.fc.bias.detach().double().numpy())
    assert (res.num_classes, res.num_samples, res.dim) == (10, 120, 512)
    assert_metrics_equal(res, want)

    # the same features by name and object, captured as an output (flattened (B, 512, 1, 1))
    by_name = track(net, loader, "avgpool", capture="output")
    assert_metrics_equal(by_name, want, names=[n for n in METRIC_NAMES if n != "nc4"])
    assert by_name.nc4 is None


def test_find_classifier_rules():
    from torchvision.models import resnet18

    assert find_classifier(resnet18(num_classes=3))[0] == "fc"

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = nn.Linear(4, 8)
            self.classifier = nn.Sequential(nn.Dropout(), nn.Linear(8, 3))
            self.aux = nn.Linear(8, 2)  # registered last, but not the classifier

    assert find_classifier(Net())[0] == "classifier.1"
    assert find_classifier(mlp())[0] == "3"  # the last nn.Linear
    with pytest.raises(ValueError, match="no nn.Linear"):
        find_classifier(nn.Sequential(nn.ReLU()))
    assert not is_causal_lm(mlp())


def test_classifier_and_layer_options_match_the_reference():
    net, loader = mlp(), mlp_data()
    x = torch.cat([b[0] for b in loader])
    y = torch.cat([b[1] for b in loader])
    net.eval()
    with torch.no_grad():
        feats = net[:3](x).double().numpy()
    W, b = net[3].weight.detach().double(), net[3].bias.detach().double()
    full = reference_metrics(feats, y.numpy(), 4, W.numpy(), b.numpy())
    net.train()
    assert_metrics_equal(track(net, loader, nc4=True), full)
    assert_metrics_equal(track(net, loader, net[2], capture="output", nc4=True), full)  # ReLU's output
    assert_metrics_equal(track(net, loader, nc4=True, classifier=(W, b)), full)
    assert_metrics_equal(track(net, loader, nc4=True, dtype=torch.float32), full, rel=1e-5)
    bare = track(net, loader, classifier=None, num_classes=4)
    assert bare.nc3 is None and bare.nc4 is None
    assert math.isclose(bare.nc1, full["nc1"], rel_tol=REL)
    rows = []
    track(net, loader, progress=rows.append)
    assert sum(rows) == 120


def test_hooks_and_modes_are_restored_after_an_exception_inside_the_loop():
    net, loader = mlp(), mlp_data()
    net.train()

    def failing():
        yield loader[0]
        yield loader[1]
        raise RuntimeError("the loader broke")

    with pytest.raises(RuntimeError, match="the loader broke"):
        track(net, failing())
    assert no_hooks(net) and all(m.training for m in net.modules())

    bad = [(loader[0][0], loader[0][1] + 7)]  # a label out of range raises inside the forward pass
    with pytest.raises(ValueError, match="num_classes"):
        track(net, bad)
    assert no_hooks(net) and all(m.training for m in net.modules())

    tracker = NeuralCollapseTracker(net)
    with pytest.raises(RuntimeError):
        with tracker:
            tracker.update(*loader[0])
            assert not no_hooks(net) and not net.training
            raise RuntimeError
    assert no_hooks(net) and net.training


class TokenNet(nn.Module):
    """Embedding -> Linear -> tanh -> Linear(V): sequence features (B, T, d)."""

    def __init__(self, V=12, d=8, seed=0):
        super().__init__()
        torch.manual_seed(seed)
        self.emb = nn.Embedding(V, d)
        self.mix = nn.Linear(d, d)
        self.lm_head = nn.Linear(d, V, bias=False)

    def features(self, input_ids):
        return torch.tanh(self.mix(self.emb(input_ids)))

    def forward(self, input_ids, attention_mask=None):
        return self.lm_head(self.features(input_ids))


def token_batches(V=12, B=6, T=9, nb=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(nb):
        ids = torch.randint(0, V, (B, T), generator=g)
        lengths = torch.randint(3, T + 1, (B,), generator=g)
        mask = (torch.arange(T)[None, :] < lengths[:, None]).long()
        out.append({"input_ids": ids * mask, "attention_mask": mask})  # padding id 0
    return out


def test_sequence_features_with_ignore_index_and_bfloat16():
    V = 12
    net = TokenNet(V).to(torch.bfloat16)
    batches = token_batches(V)
    labelled = []
    for bt in batches:  # per-position labels, padding marked -100, no shift
        lab = bt["input_ids"].clone()
        lab[bt["attention_mask"] == 0] = -100
        labelled.append((bt["input_ids"], lab))
    res = track(net, labelled, nc4=True)
    with torch.no_grad():
        feats = torch.cat([net.features(ids)[lab != -100] for ids, lab in labelled])  # bfloat16
        ys = torch.cat([lab[lab != -100] for _, lab in labelled])
    assert feats.dtype == torch.bfloat16
    W = net.lm_head.weight.detach().double().numpy()
    want = reference_metrics(feats.double().numpy(), ys.numpy(), V, W)
    assert res.num_samples == ys.numel()
    assert_metrics_equal(res, want)


def test_next_token_labels_from_dict_batches_with_padding():
    V = 12
    net = TokenNet(V)
    batches = token_batches(V)
    feats, ys = [], []
    with torch.no_grad():
        for bt in batches:  # explicit shift: position t predicts token t + 1, padding dropped
            h = net.features(bt["input_ids"])[:, :-1]
            lab = bt["input_ids"][:, 1:]
            keep = bt["attention_mask"][:, 1:] == 1
            feats.append(h[keep])
            ys.append(lab[keep])
    feats, ys = torch.cat(feats), torch.cat(ys)
    W = net.lm_head.weight.detach().double()
    present = sorted(set(ys.tolist()))
    want = reference_metrics(feats.double().numpy(), ys.numpy(), V, W.numpy())

    res = track(net, batches, shift_labels=True, nc4=True, empty="drop")
    assert res.num_classes == len(present) and res.num_samples == ys.numel()
    assert set(res.empty_classes) == set(range(V)) - set(present)
    assert_metrics_equal(res, want)

    # the same with explicit "labels" (Hugging Face collators: padding -> -100, unshifted)
    with_labels = []
    for bt in batches:
        lab = bt["input_ids"].clone()
        lab[bt["attention_mask"] == 0] = -100
        with_labels.append({**bt, "labels": lab})
    assert_metrics_equal(track(net, with_labels, shift_labels=True, nc4=True, empty="drop"), want)


def test_absent_classes_raise_or_are_dropped_and_reported():
    net, loader = mlp(K=6), mlp_data(K=4)  # K = 6 from the classifier, labels 0..3
    with pytest.raises(EmptyClassesError, match="empty=\"drop\""):
        track(net, loader)
    res = track(net, loader, empty="drop", nc4=True)
    assert res.num_classes == 4 and res.empty_classes == (4, 5)
    x = torch.cat([b[0] for b in loader])
    y = torch.cat([b[1] for b in loader])
    net.eval()
    with torch.no_grad():
        feats = net[:3](x).double().numpy()
    want = reference_metrics(feats, y.numpy(), 6, net[3].weight.detach().double().numpy(),
                             net[3].bias.detach().double().numpy())
    assert_metrics_equal(res, want)


def test_bad_arguments_name_the_fix():
    net, loader = mlp(), mlp_data()
    with pytest.raises(ValueError, match="layer='nope' is not a submodule"):
        NeuralCollapseTracker(net, "nope")
    with pytest.raises(ValueError, match="not part of the model"):
        NeuralCollapseTracker(net, nn.Linear(2, 2))
    with pytest.raises(ValueError, match="num_classes=5 disagrees"):
        NeuralCollapseTracker(net, num_classes=5)
    with pytest.raises(ValueError, match="num_classes is needed"):
        NeuralCollapseTracker(net, classifier=None)
    with pytest.raises(ValueError, match="capture must be one of"):
        NeuralCollapseTracker(net, capture="both")
    with pytest.raises(ValueError, match="not an iterator"):
        track(net, iter(loader), nc4=True)
    with pytest.raises(ValueError, match="batch_fn"):
        track(net, [loader[0][0]])
    class Unused(nn.Module):
        def __init__(self):
            super().__init__()
            self.net, self.spare = net, nn.Linear(12, 4)  # spare never runs

        def forward(self, x):
            return self.net(x)

    unused = Unused()
    with pytest.raises(ValueError, match="did not run"):
        track(unused, loader, "spare")
    assert no_hooks(unused)
    # a batch_fn reads any batch layout
    res = track(net, [{"x": xb, "y": yb} for xb, yb in loader], batch_fn=lambda b: (b["x"], b["y"]))
    assert res.num_samples == 120


def test_autocast_bfloat16_features_are_measured_exactly():
    net, loader = mlp(), mlp_data()
    amp = torch.autocast("cpu", dtype=torch.bfloat16)
    res = track(net, loader, nc4=True, autocast=amp)
    net.eval()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        feats = torch.cat([net[:3](xb) for xb, _ in loader])
    assert feats.dtype == torch.bfloat16
    y = torch.cat([b[1] for b in loader])
    want = reference_metrics(feats.double().numpy(), y.numpy(), 4, net[3].weight.detach().double().numpy(),
                             net[3].bias.detach().double().numpy())
    assert_metrics_equal(res, want)


@pytest.mark.gpu
def test_resnet18_on_the_gpu_under_bf16_autocast():
    from torchvision.models import resnet18

    torch.manual_seed(0)
    net = resnet18(weights=None, num_classes=10).cuda()
    g = torch.Generator().manual_seed(0)
    x = torch.randn(200, 3, 32, 32, generator=g)
    y = torch.randperm(200, generator=g) % 10
    loader = list(zip(x.split(50), y.split(50)))  # on the CPU: the tracker moves inputs to the model
    tracker = NeuralCollapseTracker(net, nc4=True)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        res = tracker.run(loader)
    assert tracker.stats.device.type == "cuda" and no_hooks(net)
    net.eval()
    with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
        body = nn.Sequential(*list(net.children())[:-1], nn.Flatten())
        feats = torch.cat([body(xb.cuda()) for xb, _ in loader])
    assert feats.dtype == torch.bfloat16
    want = reference_metrics(feats.double().cpu().numpy(), y.numpy(), 10, net.fc.weight.detach().double().cpu().numpy(),
                             net.fc.bias.detach().double().cpu().numpy())
    assert_metrics_equal(res, want)


def test_manual_loop_with_the_nc4_pass_equals_run():
    net, loader = mlp(), mlp_data()
    want = track(net, loader, nc4=True)
    tracker = NeuralCollapseTracker(net)
    with tracker:
        for xb, yb in loader:
            tracker.update(xb, yb)
        tracker.begin_nc4()
        for xb, yb in loader:
            tracker.update(xb, yb)
        res = tracker.compute()
    assert res == want and tracker.compute() == want  # computing twice is harmless
    assert tracker.counter.total == 120 and tracker.counter.ncc_accuracy is not None
    with pytest.raises(ValueError, match="call reset"):
        tracker.update(*loader[0])


def test_a_loader_that_changes_between_the_passes_is_refused():
    net, loader = mlp(), mlp_data()

    class Shifting:
        """First pass: classes 0-2 only; second pass: every class."""

        def __init__(self):
            self.passes = 0

        def __iter__(self):
            self.passes += 1
            for xb, yb in loader:
                yield (xb, yb) if self.passes > 1 else (xb[yb < 3], yb[yb < 3])

    with pytest.raises(ValueError, match="same data both times"):
        track(net, Shifting(), nc4=True, empty="drop")
    assert no_hooks(net)



def test_doctests_of_the_tracker():
    import doctest

    import nclab.track

    res = doctest.testmod(nclab.track)
    assert res.attempted > 0 and res.failed == 0
