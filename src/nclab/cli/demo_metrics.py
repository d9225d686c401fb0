"""The metrics demo: a planted noisy simplex ETF, every NC metric, a table and a figure.

Features are ``h_{k,i} = r m_k + sigma z_{k,i} + offset`` with m_k the rows of a random-rotated
simplex ETF, z standard Gaussian and a large common offset; the classifier is the ETF itself
(self-dual) plus a small perturbation.  For isotropic noise nc1 tends to the closed form
``sigma^2 (K-1)^2 / (K r^2)`` (Sigma_W = sigma^2 I, Sigma_B = r^2/(K-1) on the span), which the
figure overlays on the measured values over a sweep of sigma.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from nclab.geometry import simplex_etf
from nclab.io import write_json_atomic
from nclab.metrics import METRIC_NAMES, compute_metrics

DEFAULTS = dict(K=10, n=500, d=32, r=1.0, sigmas=(1e-3, 3e-3, 1e-2, 3e-2, 0.1, 0.3, 1.0), offset=100.0, seed=0)


def planted_etf(K, n, d, sigma, r=1.0, offset=0.0, seed=0, dtype=torch.float32):
    """Features (nK x d), labels and the ETF (K x d) of a planted noisy simplex ETF."""
    gen = torch.Generator().manual_seed(seed)
    M = simplex_etf(K, d, seed=seed)
    y = torch.arange(K).repeat_interleave(n)
    shift = offset * torch.randn(d, generator=gen, dtype=torch.float64)
    X = r * M[y] + sigma * torch.randn(n * K, d, generator=gen, dtype=torch.float64) + shift
    return X.to(dtype), y, M


def run_metrics_demo(out_dir, *, console=None, **overrides) -> dict:
    """Sweep the noise level, compute every metric, print a table, write JSON and a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from rich.console import Console
    from rich.table import Table

    cfg = {**DEFAULTS, **overrides}
    console = console or Console()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    K, n, d, r = cfg["K"], cfg["n"], cfg["d"], cfg["r"]
    rows = []
    for sigma in cfg["sigmas"]:
        X, y, M = planted_etf(K, n, d, sigma, r, cfg["offset"], cfg["seed"])
        gen = torch.Generator().manual_seed(cfg["seed"] + 1)
        W = M + 0.01 * torch.randn(K, d, generator=gen, dtype=torch.float64)
        b = -(W @ (X.double().mean(0)))  # a bias that cancels the offset: bias_collapse stays small
        res = compute_metrics(X, y, W.float(), b.float(), batch_size=1024)
        rows.append({"sigma": sigma, "nc1_closed_form": sigma**2 * (K - 1) ** 2 / (K * r**2), **res.as_dict()})

    # The terminal table shows every other noise level (all of them are in the JSON and figure).
    shown = rows[::2] if len(rows) > 4 else rows
    table = Table(title=f"planted simplex ETF: K={K}, n={n}/class, d={d}, r={r}, float32 + offset {cfg['offset']:g}")
    table.add_column("metric", no_wrap=True)
    for row in shown:
        table.add_column(f"σ={row['sigma']:g}", justify="right", no_wrap=True)
    for name in ("nc1_closed_form",) + METRIC_NAMES:
        table.add_row(name, *("—" if row[name] is None else f"{row[name]:.2e}" for row in shown))
    console.print(table)

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    s = np.array([row["sigma"] for row in rows])
    axes[0].loglog(s, [row["nc1"] for row in rows], "o-", label="nc1 (measured)")
    axes[0].loglog(s, [row["nc1_closed_form"] for row in rows], "k--", label=r"$\sigma^2 (K-1)^2/(K r^2)$")
    axes[0].loglog(s, [row["nc1_trace_ratio"] for row in rows], "s-", label="nc1_trace_ratio")
    axes[0].loglog(s, [row["cdnv"] for row in rows], "^-", label="cdnv")
    axes[0].set_xlabel(r"noise $\sigma$")
    axes[0].set_title("within-class variability")
    axes[0].legend()
    for name in ("nc2_equinorm_means", "nc2_maxangle_means", "nc2_etf_means", "nc3", "nc3_duality_gram"):
        axes[1].loglog(s, [max(row[name], 1e-16) for row in rows], "o-", label=name)
    axes[1].set_xlabel(r"noise $\sigma$")
    axes[1].set_title("distance to the simplex ETF / self-duality")
    axes[1].legend(fontsize=8)
    fig.tight_layout()
    fig_path = out_dir / "metrics_demo.png"
    fig.savefig(fig_path, dpi=120)
    plt.close(fig)
    json_path = write_json_atomic(out_dir / "metrics_demo.json", {"config": cfg, "results": rows})
    console.print(f"wrote {json_path} and {fig_path}")
    return {"config": cfg, "results": rows, "figure": str(fig_path), "json": str(json_path)}
