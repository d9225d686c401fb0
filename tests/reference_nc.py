"""An independent float64 two-pass reference for the NC metrics, written straight from
REFERENCE.md section 3 with explicit per-class loops and explicit K x K matrices.  It is slow on
purpose and shares no code with nclab.metrics."""

from __future__ import annotations

import numpy as np


def reference_metrics(X, y, K, W=None, b=None, weighted=False, rtol=1e-10):
    X = np.asarray(X, dtype=np.float64)
    y = np.asarray(y)
    N, d = X.shape
    classes = [k for k in range(K) if np.any(y == k)]
    Kp = len(classes)
    means = np.stack([X[y == k].mean(axis=0) for k in classes])
    counts = np.array([np.sum(y == k) for k in classes], dtype=np.float64)
    sw = np.zeros((d, d))
    v = np.zeros(Kp)
    for i, k in enumerate(classes):  # second pass: centred on the final class means
        D = X[y == k] - means[i]
        sw += D.T @ D
        v[i] = np.mean(np.sum(D * D, axis=1))
    sw /= N
    mu_g = X.mean(axis=0) if weighted else means.mean(axis=0)
    Mc = means - mu_g
    sb = Mc.T @ Mc / Kp
    lam, V = np.linalg.eigh(sb)
    keep = lam > rtol * lam.max()
    sb_pinv = (V[:, keep] / lam[keep]) @ V[:, keep].T
    out = {
        "nc1": float(np.trace(sw @ sb_pinv)) / Kp,
        "nc1_trace_ratio": float(np.trace(sw) / np.trace(sb)),
    }
    pairs = [(i, j) for i in range(Kp) for j in range(i + 1, Kp)]
    out["cdnv"] = float(np.mean([(v[i] + v[j]) / (2 * np.sum((means[i] - means[j]) ** 2)) for i, j in pairs]))

    def equinorm(A):
        n = np.linalg.norm(A, axis=1)
        return float(np.std(n, ddof=1) / np.mean(n))

    def maxangle(A):
        U = A / np.linalg.norm(A, axis=1, keepdims=True)
        C = U @ U.T + 1.0 / (Kp - 1)
        off = ~np.eye(Kp, dtype=bool)
        return float(np.mean(np.abs(C[off])))

    target = (np.eye(Kp) - np.ones((Kp, Kp)) / Kp) / np.sqrt(Kp - 1)

    def gram_err(G):
        return float(np.linalg.norm(G / np.linalg.norm(G) - target))

    out["nc2_equinorm_means"] = equinorm(Mc)
    out["nc2_maxangle_means"] = maxangle(Mc)
    out["nc2_etf_means"] = gram_err(Mc @ Mc.T)
    for key in ("nc2_equinorm_W", "nc2_maxangle_W", "nc2_etf_W", "nc3", "nc3_duality_gram", "nc4", "bias_collapse"):
        out[key] = None
    if W is not None:
        W = np.asarray(W, dtype=np.float64)[classes]
        bb = np.zeros(Kp) if b is None else np.asarray(b, dtype=np.float64)[classes]
        out["nc2_equinorm_W"] = equinorm(W)
        out["nc2_maxangle_W"] = maxangle(W)
        out["nc2_etf_W"] = gram_err(W @ W.T)
        out["nc3"] = float(np.sum((W / np.linalg.norm(W) - Mc / np.linalg.norm(Mc)) ** 2))
        out["nc3_duality_gram"] = gram_err(W @ Mc.T)
        offset = W @ mu_g + bb  # REFERENCE.md: the centred |(I - J/K)(W mu_G + b)|
        out["bias_collapse"] = float(np.linalg.norm((np.eye(len(offset)) - 1.0 / len(offset)) @ offset))
        pred = np.argmax(X @ W.T + bb, axis=1)
        dist = np.stack([np.sum((X - m) ** 2, axis=1) for m in means], axis=1)
        out["nc4"] = float(np.mean(pred != np.argmin(dist, axis=1)))
    return out
