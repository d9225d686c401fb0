"""nclab.metrics against the independent float64 two-pass reference (tests/reference_nc.py),
closed forms, invariances, exact merges and a 3-process gloo run."""

from __future__ import annotations

import os
import random

import pytest
import torch
import torch.multiprocessing as mp

from nclab.geometry import simplex_etf
from nclab.metrics import METRIC_NAMES, NC4Counter, NCStats, compute_metrics

from reference_nc import reference_metrics


def planted(K, n, d, sigma, r=1.0, seed=0, dtype=torch.float64, sizes=None):
    """Class means on a scaled simplex ETF (norm r) plus isotropic Gaussian noise sigma^2 I."""
    gen = torch.Generator().manual_seed(seed)
    M = r * simplex_etf(K, d, seed=seed + 1)
    sizes = [n] * K if sizes is None else sizes
    y = torch.repeat_interleave(torch.arange(K), torch.tensor(sizes))
    X = M[y] + sigma * torch.randn(len(y), d, generator=gen, dtype=torch.float64)
    return X.to(dtype), y, M


def assert_close_metrics(res, ref, rel, keys=None, abs_=0.0):
    keys = keys or [k for k in METRIC_NAMES if ref.get(k) is not None]
    for k in keys:
        got, want = res[k], ref[k]
        assert got is not None, k
        assert abs(got - want) <= rel * abs(want) + abs_, f"{k}: {got!r} vs reference {want!r}"


# -- closed forms ---------------------------------------------------------------------------


def test_planted_etf_matches_two_pass_reference_and_closed_form():
    K, n, d, sigma, r = 6, 4000, 12, 0.05, 1.0
    X, y, M = planted(K, n, d, sigma, r)
    W = M + 0.01 * torch.randn(K, d, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    b = 0.1 * torch.randn(K, dtype=torch.float64, generator=torch.Generator().manual_seed(6))
    res = compute_metrics(X, y, W, b, batch_size=1000).as_dict()
    ref = reference_metrics(X.numpy(), y.numpy(), K, W.numpy(), b.numpy())
    assert_close_metrics(res, ref, rel=1e-10, abs_=1e-14)
    # nc1 -> sigma^2 (K-1)^2 / (K r^2) as n grows (the realised data deviates by O(1/sqrt(n d)))
    closed = sigma**2 * (K - 1) ** 2 / (K * r**2)
    assert abs(res["nc1"] - closed) / closed < 0.03


def test_nc1_closed_form_improves_with_n():
    K, d, sigma = 4, 8, 0.1
    closed = sigma**2 * (K - 1) ** 2 / K
    errs = [abs(compute_metrics(*planted(K, n, d, sigma, seed=3)[:2]).nc1 - closed) / closed for n in (50, 5000)]
    assert errs[1] < errs[0] and errs[1] < 0.05


@pytest.mark.parametrize("K,d", [(5, 5), (5, 4), (3, 7), (2, 3)])
def test_exact_etf_with_self_dual_classifier_gives_zero(K, d):
    M = 3.0 * simplex_etf(K, d, seed=2)
    y = torch.arange(K).repeat(7)
    X = M[y] + 5.0  # a common offset changes nothing once the global mean is removed
    res = compute_metrics(X, y, classifier=M, bias=-(M @ torch.full((d,), 5.0, dtype=torch.float64))).as_dict()
    for k in METRIC_NAMES:
        assert res[k] is not None and abs(res[k]) < 1e-12, (k, res[k])


# -- numerics -------------------------------------------------------------------------------


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


def test_null_space_noise_leaves_nc1_unchanged():
    K, n, d = 4, 200, 16
    X, y, _ = planted(K, n, d, 0.1, seed=7)
    base = compute_metrics(X, y)
    means = torch.stack([X[y == k].mean(0) for k in range(K)])
    Mc = means - means.mean(0)
    Q, _ = torch.linalg.qr(Mc.T)  # basis of span of the centred means (d x K)
    Z = torch.randn(X.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(8))
    Z = Z - (Z @ Q) @ Q.T  # orthogonal to the span
    Z = Z - torch.stack([Z[y == k].mean(0) for k in range(K)])[y]  # class means unchanged
    moved = compute_metrics(X + 3.0 * Z, y)
    assert moved.nc1 == pytest.approx(base.nc1, rel=1e-10)
    assert moved.nc1_trace_ratio > 2 * base.nc1_trace_ratio  # the noise is real, only invisible to nc1


@pytest.mark.parametrize("K,d", [(12, 5), (6, 5), (2, 4), (2, 1), (30, 3)])
def test_more_classes_than_dimensions_and_k2(K, d):
    X, y, _ = planted(K, 40, max(d, K - 1), 0.2, seed=K)
    X = X[:, :d] + 0.5 * torch.randn(K, d, dtype=torch.float64, generator=torch.Generator().manual_seed(1))[y]
    W = torch.randn(K, d, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    res = compute_metrics(X, y, W).as_dict()
    ref = reference_metrics(X.numpy(), y.numpy(), K, W.numpy())
    assert_close_metrics(res, ref, rel=1e-9, abs_=1e-13)
    stats = NCStats(K)
    stats.update(X, y)
    assert stats.compute().sigma_b_rank == min(K - 1, d)


def test_class_with_one_sample():
    K, d = 4, 6
    X, y, _ = planted(K, 30, d, 0.3, seed=11, sizes=[30, 1, 30, 2])
    res = compute_metrics(X, y).as_dict()
    ref = reference_metrics(X.numpy(), y.numpy(), K)
    assert_close_metrics(res, ref, rel=1e-10)


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


def test_weighted_global_mean_option():
    K, d = 4, 7
    X, y, _ = planted(K, 10, d, 0.3, seed=13, sizes=[10, 50, 5, 20])
    W = torch.randn(K, d, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    res = compute_metrics(X, y, W, weighted_mean=True).as_dict()
    ref = reference_metrics(X.numpy(), y.numpy(), K, W.numpy(), weighted=True)
    assert_close_metrics(res, ref, rel=1e-10)
    assert res["nc1"] != pytest.approx(compute_metrics(X, y).nc1, rel=1e-3)


def test_pairwise_tiles_give_the_untiled_value():
    K, d = 37, 8
    X, y, _ = planted(K, 5, 40, 0.3, seed=14)
    X = X[:, :d]
    W = torch.randn(K, d, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    stats = NCStats(K).update(X, y)
    a = stats.compute(W, tile=5).as_dict()
    b = stats.compute(W, tile=4096).as_dict()
    for k in a:
        if a[k] is not None:
            assert a[k] == pytest.approx(b[k], rel=1e-12), k


# -- merges -----------------------------------------------------------------------------------


def state(s: NCStats):
    return [s.counts, s.means, s.m2, s.scatter]


def assert_same_state(a, b, tol=1e-12):
    for x, y in zip(state(a), state(b)):
        scale = max(1.0, float(y.abs().max()))
        assert float((x - y).abs().max()) <= tol * scale


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


def test_nc4_counter_matches_reference_and_reports_accuracies():
    K, d = 5, 6
    X, y, M = planted(K, 60, d, 0.6, seed=18)
    W = M + 0.4 * torch.randn(K, d, dtype=torch.float64, generator=torch.Generator().manual_seed(7))
    stats = NCStats(K).update(X, y)
    counter = NC4Counter(stats.class_means, W)
    for xb, yb in zip(X.split(17), y.split(17)):
        counter.update(xb, yb)
    ref = reference_metrics(X.numpy(), y.numpy(), K, W.numpy())
    assert counter.compute() == pytest.approx(ref["nc4"], abs=0)
    assert 0.0 < ref["nc4"] < 0.5
    pred = (X @ W.T).argmax(1)
    assert counter.classifier_accuracy == pytest.approx(float((pred == y).double().mean()))


# -- distributed --------------------------------------------------------------------------------


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


# -- bad input ----------------------------------------------------------------------------------


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


# -- GPU ----------------------------------------------------------------------------------------


@pytest.mark.gpu
def test_cuda_statistics_equal_cpu():
    X, y, M = planted(5, 200, 16, 0.1, seed=21)
    X32 = (X + 1e3).float()
    cpu = compute_metrics(X32, y, M.float()).as_dict()
    gpu = compute_metrics(X32.cuda(), y.cuda(), M.float().cuda()).as_dict()
    for k in cpu:
        if cpu[k] is not None:
            assert gpu[k] == pytest.approx(cpu[k], rel=1e-5, abs=1e-9), k
