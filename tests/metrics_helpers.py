"""Shared data and comparisons of the metrics tests: planted simplex-ETF features and tolerance
checks against tests/reference_nc.py (the independent float64 oracle)."""

from __future__ import annotations

import torch

from nclab.geometry import simplex_etf
from nclab.metrics import METRIC_NAMES, NCStats


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


def state(s: NCStats):
    return [s.counts, s.means, s.m2, s.scatter]


def assert_same_state(a, b, tol=1e-12):
    for x, y in zip(state(a), state(b)):
        scale = max(1.0, float(y.abs().max()))
        assert float((x - y).abs().max()) <= tol * scale
