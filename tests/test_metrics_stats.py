"""nclab.metrics.stats.NCStats: exact one-pass statistics against the float64 two-pass reference
(tests/reference_nc.py), exact merges, a 3-process gloo sync, the lifecycle (reset, state_dict)
and the errors at its boundary."""

from __future__ import annotations

import io
import os
import random

import pytest
import torch
import torch.multiprocessing as mp

from nclab.metrics import METRIC_NAMES, NC4Counter, NCStats, compute_metrics

from metrics_helpers import assert_close_metrics, assert_same_state, planted, state
from reference_nc import reference_metrics


# -- numerics ----------------------------------------------------------------------------------


def test_cancellation_float32_with_large_common_offset():
    K, n, d, sigma = 8, 300, 32, 1e-2
    X, y, M = planted(K, n, d, sigma, seed=4)
    gen = torch.Generator().manual_seed(9)
    offset = 1e5 * sigma * torch.randn(d, dtype=torch.float64, generator=gen)  # 1e5 x the spread
    X32 = (X + offset).float()  # what the network hands us
    W = M + 0.05 * torch.randn(K, d, dtype=torch.float64, generator=gen)
    stats = NCStats(K)
    for xb, yb in zip(X32.split(257), y.split(257)):
        stats.update(xb, yb)
    res = stats.compute(classifier=W.float()).as_dict()
    ref = reference_metrics(X32.double().numpy(), y.numpy(), K, W.float().double().numpy())
    keys = [k for k in METRIC_NAMES if k != "nc4" and ref[k] is not None]
    assert_close_metrics(res, ref, rel=1e-5, keys=keys)
    # the naive float32 raw-moment formula really fails here, so the test is meaningful
    counts = torch.bincount(y).float()
    sums = torch.zeros(K, d).index_add_(0, y, X32)
    raw_trace = float((X32 * X32).sum() - ((sums * sums).sum(1) / counts).sum()) / len(y)
    means64 = torch.stack([X32.double()[y == k].mean(0) for k in range(K)])  # two-pass, float64
    exact_trace = float(((X32.double() - means64[y]) ** 2).sum()) / len(y)
    assert abs(raw_trace - exact_trace) / exact_trace > 1e-2


def test_empty_class_raises_or_is_dropped_and_reported():
    K, d = 5, 6
    X, y, _ = planted(K, 20, d, 0.3, seed=12)
    keep = y != 3
    X, y = X[keep], y[keep]
    stats = NCStats(K)
    stats.update(X, y)
    with pytest.raises(ValueError, match=r"have no sample: \[3\]"):
        stats.compute()
    res = stats.compute(empty="drop")
    assert res.empty_classes == (3,) and res.num_classes == 4
    ref = reference_metrics(X.numpy(), y.numpy(), K)
    assert_close_metrics(res.as_dict(), ref, rel=1e-10)


# -- merges ------------------------------------------------------------------------------------


def test_random_chunkings_and_merge_trees_are_exact():
    rng = random.Random(0)
    K, d = 7, 6
    X, y, _ = planted(K, 30, d, 0.5, seed=15, sizes=[30, 1, 45, 12, 30, 2, 9])
    X = X + 100.0  # offsets make sloppy merges visible
    whole = NCStats(K).update(X, y)
    for trial in range(5):
        perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(trial))
        Xp, yp = X[perm], y[perm]
        cuts = sorted(rng.sample(range(len(y) + 1), 12)) + [len(y)]
        chunks, start = [], 0
        for c in cuts + [c for c in cuts[:3]]:  # repeated cuts make empty chunks
            chunks.append(NCStats(K).update(Xp[start:max(start, c)], yp[start:max(start, c)]))
            start = max(start, c)
        chunks.append(NCStats(K))  # never updated
        while len(chunks) > 1:  # random merge tree
            i, j = sorted(rng.sample(range(len(chunks)), 2))
            merged = chunks[i].merge(chunks[j])
            chunks = [c for t, c in enumerate(chunks) if t not in (i, j)] + [merged]
        assert_same_state(chunks[0], whole)
    one_by_one = NCStats(K)
    for t in range(len(y)):
        one_by_one.update(X[t : t + 1], y[t : t + 1])
    assert_same_state(one_by_one, whole)
    a, b = one_by_one.compute().as_dict(), whole.compute().as_dict()
    for k in a:
        if a[k] is not None:
            assert a[k] == pytest.approx(b[k], rel=1e-12, abs=1e-15), k


def test_classes_missing_from_chunks_merge_exactly():
    K, d = 5, 4
    X, y, _ = planted(K, 10, d, 0.4, seed=16)
    a = NCStats(K).update(X[y < 2], y[y < 2])
    b = NCStats(K).update(X[y >= 2], y[y >= 2])
    assert_same_state(a.merge(b), NCStats(K).update(X, y))


def test_float32_input_batches_agree_with_float64_state():
    X, y, _ = planted(6, 50, 9, 0.2, seed=17)
    s32 = NCStats(6)
    for xb, yb in zip(X.float().split(33), y.split(33)):
        s32.update(xb, yb)
    s64 = NCStats(6).update(X.float().double(), y)
    assert s32.means.dtype == torch.float64
    assert torch.allclose(s32.scatter, s64.scatter, rtol=1e-5, atol=1e-6)


# -- distributed -------------------------------------------------------------------------------


def _dist_worker(rank, world, init_file, out_dir):
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    X, y, M = planted(6, 40, 5, 0.3, seed=19, sizes=[40, 3, 40, 17, 40, 25])
    X = X + 50.0
    # uneven shards; class 1 lives only on rank 2, class 0 is absent on rank 1
    shards = [(y != 1) & (torch.arange(len(y)) % 5 < 3), (y != 1) & (y != 0) & (torch.arange(len(y)) % 5 >= 3),
              (y == 1) | ((y == 0) & (torch.arange(len(y)) % 5 >= 3))]
    mask = shards[rank]
    stats = NCStats(6)
    for xb, yb in zip(X[mask].split(7), y[mask].split(7)):
        stats.update(xb, yb)
    stats.sync()
    counter = NC4Counter(stats.class_means, M)
    counter.update(X[mask], y[mask])
    counter.sync()
    res = stats.compute(classifier=M).with_nc4(counter.compute())
    torch.save({"state": state(stats), "metrics": res.as_dict()}, os.path.join(out_dir, f"rank{rank}.pt"))
    dist.destroy_process_group()


def test_three_process_gloo_sync_equals_single_process(tmp_path):
    mp.spawn(_dist_worker, args=(3, str(tmp_path / "init"), str(tmp_path)), nprocs=3, join=True)
    X, y, M = planted(6, 40, 5, 0.3, seed=19, sizes=[40, 3, 40, 17, 40, 25])
    X = X + 50.0
    single = NCStats(6).update(X, y)
    want = compute_metrics(X, y, M).as_dict()
    for rank in range(3):
        got = torch.load(tmp_path / f"rank{rank}.pt")
        for a, b in zip(got["state"], state(single)):
            assert float((a - b).abs().max()) <= 1e-12 * max(1.0, float(b.abs().max()))
        for k, v in want.items():
            assert got["metrics"][k] == pytest.approx(v, rel=1e-12, abs=1e-15), k


def test_sync_without_process_group_is_a_no_op():
    X, y, _ = planted(3, 10, 4, 0.3)
    s = NCStats(3).update(X, y)
    before = [t.clone() for t in state(s)]
    s.sync()
    for a, b in zip(state(s), before):
        assert torch.equal(a, b)


# -- bad input ---------------------------------------------------------------------------------


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_features_are_rejected(bad):
    X, y, _ = planted(3, 10, 4, 0.3)
    X[5, 2] = bad
    with pytest.raises(ValueError, match="NaN or inf"):
        NCStats(3).update(X, y)


def test_bad_labels_are_rejected():
    X, y, _ = planted(3, 10, 4, 0.3)
    with pytest.raises(ValueError, match="< num_classes = 3"):
        NCStats(3).update(X, torch.where(y == 2, 3, y))
    with pytest.raises(ValueError, match=">= 0"):
        NCStats(3).update(X, y - 1)
    with pytest.raises(ValueError, match="must be integers"):
        NCStats(3).update(X, y.double())
    with pytest.raises(ValueError, match="entries but features have"):
        NCStats(3).update(X, y[:-1])
    with pytest.raises(ValueError, match="1-D"):
        NCStats(3).update(X, y[:, None])


def test_bad_shapes_and_options_are_rejected():
    X, y, M = planted(3, 10, 4, 0.3)
    with pytest.raises(ValueError, match="2-D"):
        NCStats(3).update(X[0], y[:1])
    s = NCStats(3).update(X, y)
    with pytest.raises(ValueError, match="dimension d = 5"):
        s.update(torch.zeros(2, 5, dtype=torch.float64), y[:2])
    with pytest.raises(ValueError, match=r"classifier must have shape \(K, d\) = \(3, 4\)"):
        s.compute(classifier=M[:, :3])
    with pytest.raises(ValueError, match="bias must have shape"):
        s.compute(classifier=M, bias=torch.zeros(4))
    with pytest.raises(ValueError, match="num_classes must be an integer >= 2"):
        NCStats(1)
    with pytest.raises(ValueError, match="floating-point"):
        NCStats(3).update(X.long(), y)
    with pytest.raises(ValueError, match="no samples yet"):
        NCStats(3).compute()
    with pytest.raises(ValueError, match="single class"):
        compute_metrics(X[y == 0], y[y == 0] * 0)


# -- lifecycle: state_dict, load_state_dict, reset, merge_state ----------------------------------


def _stream(dtype=torch.float64):
    K, d = 5, 7
    X, y, M = planted(K, 40, d, 0.3, seed=23, sizes=[40, 3, 55, 17, 40])
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))
    X = (X[perm] + 100.0).to(dtype)  # an offset makes a sloppy restore visible
    W = M + 0.1 * torch.randn(K, d, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    b = 0.1 * torch.randn(K, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    return K, list(zip(X.split(23), y[perm].split(23))), W, b


def _assert_rel_equal_state(a: NCStats, b: NCStats, rel=1e-12):
    for name, x, y in zip(("counts", "means", "m2", "scatter"), state(a), state(b)):
        assert x.dtype == y.dtype == torch.float64, name
        assert float((x - y).abs().max()) <= rel * float(y.abs().max()), name


def _assert_rel_equal_metrics(a: NCStats, b: NCStats, W, bias, rel=1e-12):
    got, want = a.compute(W, bias).as_dict(), b.compute(W, bias).as_dict()
    for k in METRIC_NAMES:
        if want[k] is None:
            assert got[k] is None, k
        else:
            assert got[k] == pytest.approx(want[k], rel=rel, abs=0), k


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("through_file", [False, True])
def test_state_dict_round_trip_mid_stream_equals_an_uninterrupted_pass(dtype, through_file):
    K, batches, W, b = _stream(dtype)
    whole = NCStats(K)
    for xb, yb in batches:
        whole.update(xb, yb)
    half = len(batches) // 2
    first = NCStats(K)
    for xb, yb in batches[:half]:
        first.update(xb, yb)
    sd = first.state_dict()
    if through_file:  # what a training checkpoint does
        buf = io.BytesIO()
        torch.save({"epoch": 3, "nc_stats": sd}, buf)
        buf.seek(0)
        sd = torch.load(buf, weights_only=True)["nc_stats"]
    resumed = NCStats(K).load_state_dict(sd)
    assert resumed.num_samples == first.num_samples and resumed.dim == first.dim
    for xb, yb in batches[half:]:
        resumed.update(xb, yb)
        first.update(xb, yb)  # taking a state_dict does not disturb the original
    # float64 input: equal to rounding.  float32 input: the products are float32 (of centred
    # values), and a restored state continues from references rounded to float32, so the two
    # streams agree to float32's precision (the metrics to 1e-6), not bit for bit.
    rel = 1e-12 if dtype == torch.float64 else 1e-6
    for s in (resumed, first):
        _assert_rel_equal_state(s, whole, rel=rel)
        _assert_rel_equal_metrics(s, whole, W, b, rel=rel)


def test_state_dict_is_plain_tensors_and_ints_and_a_copy():
    K, batches, _, _ = _stream()
    s = NCStats(K).update(*batches[0])
    sd = s.state_dict()
    assert set(sd) == {"num_classes", "dim", "synced", "counts", "means", "m2", "scatter"}
    assert type(sd["num_classes"]) is int and type(sd["dim"]) is int and type(sd["synced"]) is int
    assert all(type(sd[k]) is torch.Tensor and sd[k].dtype == torch.float64 for k in ("counts", "means", "m2", "scatter"))
    before = sd["means"].clone()
    s.update(*batches[1])
    assert torch.equal(sd["means"], before)  # a copy, not a view of the live state
    empty = NCStats(K).state_dict()
    assert empty == {"num_classes": K, "dim": 0, "synced": 0}
    fresh = NCStats(K).load_state_dict(empty)
    assert fresh.dim is None and fresh.num_samples == 0
    fresh.update(*batches[0])  # and it still takes data of any dimension
    _assert_rel_equal_state(fresh, NCStats(K).update(*batches[0]), rel=0.0)


@pytest.mark.parametrize("dim", [None, 7])
def test_reset_returns_to_a_fresh_state(dim):
    K, batches, W, b = _stream()
    s = NCStats(K, dim)
    for xb, yb in batches:
        s.update(xb, yb)
    s.reset()
    fresh = NCStats(K, dim)
    assert s.dim == fresh.dim and s.num_samples == 0
    if dim is None:
        assert s.counts is None and s.means is None
    else:
        for x, y in zip(state(s), state(fresh)):
            assert torch.equal(x, y)
    with pytest.raises(ValueError, match="no samples yet"):
        s.compute()
    for xb, yb in batches[:3]:
        s.update(xb, yb)
        fresh.update(xb, yb)
    for x, y in zip(state(s), state(fresh)):
        assert torch.equal(x, y)
    assert s.compute(W, b) == fresh.compute(W, b)


def test_load_state_dict_rejects_mismatches_by_name_and_leaves_the_object_unchanged():
    K, batches, _, _ = _stream()
    sd = NCStats(K).update(*batches[0]).state_dict()
    target = NCStats(K, 7).update(*batches[1])
    before = [t.clone() for t in state(target)]
    with pytest.raises(ValueError, match=r"num_classes = 5, but these statistics have num_classes = 4"):
        NCStats(4).load_state_dict(sd)
    with pytest.raises(ValueError, match=r"dim = 7, but these statistics have dim = 6"):
        NCStats(K, 6).load_state_dict(sd)
    with pytest.raises(ValueError, match=r"state_dict\['means'\] must have shape \(5, 7\), got \(5, 6\)"):
        target.load_state_dict({**sd, "means": sd["means"][:, :6]})
    with pytest.raises(ValueError, match=r"state_dict\['scatter'\] must have dtype torch.float64, got torch.float32"):
        target.load_state_dict({**sd, "scatter": sd["scatter"].float()})
    with pytest.raises(ValueError, match=r"missing keys \['m2'\]"):
        target.load_state_dict({k: v for k, v in sd.items() if k != "m2"})
    with pytest.raises(ValueError, match=r"lacks \['dim'\]"):
        target.load_state_dict({k: v for k, v in sd.items() if k != "dim"})
    with pytest.raises(ValueError, match="must be a torch.Tensor"):
        target.load_state_dict({**sd, "counts": sd["counts"].tolist()})
    for x, y in zip(state(target), before):
        assert torch.equal(x, y)


def test_merge_state_accepts_statistics_or_their_state_dict():
    K, batches, W, b = _stream()
    a = NCStats(K)
    for xb, yb in batches[:4]:
        a.update(xb, yb)
    rest = NCStats(K)
    for xb, yb in batches[4:]:
        rest.update(xb, yb)
    whole = NCStats(K)
    for xb, yb in batches:
        whole.update(xb, yb)
    via_obj = NCStats(K).load_state_dict(a.state_dict()).merge_state(rest)
    via_dict = NCStats(K).load_state_dict(a.state_dict()).merge_state(rest.state_dict())
    for s in (via_obj, via_dict):
        _assert_rel_equal_state(s, whole)
        _assert_rel_equal_metrics(s, whole, W, b)
    with pytest.raises(ValueError, match="can only merge another NCStats"):
        a.merge_state([1, 2])
