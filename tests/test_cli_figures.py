"""The figures of nclab.cli (plots, demo_metrics, demo_ufm), read through matplotlib's objects.

Every figure is built from small synthetic inputs (a fake run directory, a tiny UFM solve, a
hand-made landscape survey, the metrics demo with --quick-like settings) and checked as a reader
would: every panel has labelled axes, epochs are integers, a fixed head's exact zeros do not pull
a log axis down to the rounding floor, the UFM demo is a grid of a reasonable aspect whose titles
give the problem sizes, legends give the numeric feature dimension, and no two lines of a panel
lie on each other unless the legend says so.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from nclab.cli.demo_metrics import metrics_figure, run_metrics_demo
from nclab.cli.demo_ufm import problem_title, ufm_demo_figure
from nclab.cli.plots import (
    ROUNDING_FLOOR,
    catalogue_figure,
    feature_dim,
    plot_result,
    plot_runs,
    run_label,
    runs_figure,
    starts_figure,
)
from nclab.ufm.run import solve

pytestmark = pytest.mark.usefixtures("one_thread")
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


# ------------------------------------------------------------------------------------------------
# checks shared by every figure
# ------------------------------------------------------------------------------------------------
def drawn_axes(fig):
    """The axes a reader sees as panels (not hidden, not a legend-only panel with its axis off)."""
    return [ax for ax in fig.axes if ax.get_visible() and ax.axison]


def assert_every_panel_labelled(fig):
    axes = drawn_axes(fig)
    assert axes
    for ax in axes:
        assert ax.get_xlabel().strip(), f"panel {ax.get_title()!r} has no x label"
        assert ax.get_ylabel().strip(), f"panel {ax.get_title()!r} has no y label"


def _same_curve(a, b, rtol=0.05) -> bool:
    """Lines that lie on each other as the axes draw them: within ``rtol`` relative at every point
    on a log y axis, within 1% of the y range on a linear one."""
    xa, ya = (np.asarray(v, dtype=float) for v in a.get_data())
    xb, yb = (np.asarray(v, dtype=float) for v in b.get_data())
    if len(xa) == 0 or xa.shape != xb.shape or not np.allclose(xa, xb):
        return False
    ok = np.isfinite(ya) & np.isfinite(yb)
    if not ok.any():
        return False
    ya, yb = ya[ok], yb[ok]
    ax = a.axes
    if ax.get_yscale() == "linear":
        lo, hi = ax.get_ylim()
        return bool(np.all(np.abs(ya - yb) <= 0.01 * abs(hi - lo)))
    return bool(np.all(np.abs(ya - yb) <= rtol * np.maximum(np.abs(ya), np.abs(yb))))


def _look(line):
    """What tells two lines apart where they lie on each other (the colour of the top one hides
    the other's)."""
    return (line.get_linestyle(), line.get_marker(), line.get_markerfacecolor() == "none")


def assert_no_hidden_overlaps(fig):
    """Two lines of one panel that lie on each other (within 5% at every point, as a log axis
    shows them) must look different and one of their legend entries must say they coincide."""
    for ax in fig.axes:
        lines = [ln for ln in ax.get_lines() if len(ln.get_xdata())]
        for i, a in enumerate(lines):
            for b in lines[i + 1:]:
                if _same_curve(a, b):
                    where = f"{ax.get_title()!r}: {a.get_label()!r} and {b.get_label()!r}"
                    assert _look(a) != _look(b), f"identical-looking overlapping lines in {where}"
                    assert "coincide" in (a.get_label() + b.get_label()), f"unmarked overlap in {where}"


def test_the_overlap_check_catches_two_identical_lines():
    from matplotlib.figure import Figure

    fig = Figure()
    ax = fig.subplots()
    ax.plot([1, 2, 3], [1.0, 0.1, 0.01], "o-", label="a")
    ax.plot([1, 2, 3], [1.0, 0.1, 0.0101], "o-", label="b")
    with pytest.raises(AssertionError, match="identical-looking"):
        assert_no_hidden_overlaps(fig)


# ------------------------------------------------------------------------------------------------
# nclab plot (plot_runs) on fake run directories
# ------------------------------------------------------------------------------------------------
def fake_run(path, head, *, feature_dim=None, model="resnet18", epochs=(1, 2, 3), w_zero=False, scale=1.0):
    """A run directory as `nclab train` writes it: config.json and log.jsonl (no summary)."""
    path.mkdir(parents=True)
    (path / "config.json").write_text(json.dumps({"head": head, "model": model, "feature_dim": feature_dim,
                                                  "num_classes": 10}))
    lines = []
    for e in epochs:
        s = scale * 10.0 ** -e  # the means' measures fall a decade an epoch
        rec = {"epoch": e, "lr": 0.05, "train_acc": 1 - s, "test_acc": 0.9 - s, "train_loss": s, "nc1": s,
               "nc2_equinorm_means": 0.3 * s, "nc2_maxangle_means": 0.2 * s, "nc3": 0.5 * s, "nc4": 0.01 * s,
               "cdnv": 0.1 * s,
               "nc2_equinorm_W": 3e-17 if w_zero else 0.05 * s, "nc2_maxangle_W": 1e-16 if w_zero else 0.04 * s}
        lines.append(json.dumps(rec))
    (path / "log.jsonl").write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture()
def runs(tmp_path):
    return [fake_run(tmp_path / "learned", "learned"), fake_run(tmp_path / "etf", "etf", w_zero=True, scale=0.5),
            fake_run(tmp_path / "etf_dk", "etf", feature_dim=10, w_zero=True, scale=0.25)]


def _legend_texts(fig):
    legends = list(fig.legends) + [ax.get_legend() for ax in fig.axes if ax.get_legend() is not None]
    return [t.get_text() for leg in legends for t in leg.get_texts()]


def test_runs_figure_labels_every_panel_and_has_no_hidden_overlaps(runs):
    fig = runs_figure(runs)
    assert_every_panel_labelled(fig)
    assert_no_hidden_overlaps(fig)


def test_epoch_ticks_are_integers(runs):
    fig = runs_figure(runs)
    fig.canvas.draw()
    for ax in drawn_axes(fig):
        lo, hi = ax.get_xlim()
        ticks = [t for t in ax.get_xticks() if lo <= t <= hi]
        assert ticks and all(float(t).is_integer() for t in ticks), (ax.get_title(), ticks)


def test_a_fixed_heads_zeros_do_not_pull_the_nc2_axes_down(runs):
    fig = runs_figure(runs)
    nc2 = [ax for ax in fig.axes if ax.get_title().startswith("NC2")]
    assert len(nc2) == 2
    for ax in nc2:
        bottom, _ = ax.get_ylim()
        assert bottom > 1e-6, (ax.get_title(), ax.get_ylim())  # the means reach 5e-5; W of the ETF is 1e-16
        for line in ax.get_lines():
            y = np.asarray(line.get_ydata(), dtype=float)
            assert not (y <= ROUNDING_FLOOR).any()
        texts = [t.get_text() for t in ax.get_legend().get_texts()]
        assert sum("0 (fixed)" in t for t in texts) == 2  # the two ETF runs' W


def test_legends_give_the_numeric_feature_dimension(runs, tmp_path):
    texts = _legend_texts(runs_figure(runs))
    assert not any("default" in t for t in texts)
    assert any("learned d=512" in t for t in texts) and any("etf d=10" in t for t in texts)
    # given labels (nclab reproduce heads) get the d appended
    texts = _legend_texts(runs_figure(runs, labels=["learned", "etf", "etf_d=K"]))
    assert {"learned, d=512", "etf, d=512", "etf_d=K, d=10"} <= set(texts)
    # the MLP's default width, and the built network's d from summary.json when there is one
    mlp = fake_run(tmp_path / "mlp", "learned", model="mlp")
    assert feature_dim(mlp) == 512 and "d=512" in run_label(mlp)
    (mlp / "summary.json").write_text(json.dumps({"feature_dim": 64}))
    assert feature_dim(mlp) == 64


def test_plot_runs_writes_the_figure(runs, tmp_path):
    out = plot_runs(runs, tmp_path / "fig" / "runs.png", title="fake")
    assert out.read_bytes()[:8] == PNG_MAGIC


def test_a_single_epoch_run_still_gets_integer_ticks(tmp_path):
    fig = runs_figure([fake_run(tmp_path / "one", "learned", epochs=(1,))])
    fig.canvas.draw()
    ax = drawn_axes(fig)[0]
    lo, hi = ax.get_xlim()
    assert all(float(t).is_integer() for t in ax.get_xticks() if lo <= t <= hi)


# ------------------------------------------------------------------------------------------------
# UFM: plot_result and the demo's combined figure
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("loss", ["ce", "sphere"])
def test_plot_result_labels_every_panel(loss, tmp_path):
    res = solve(loss, "lbfgs", seed=0, gtol=1e-8, metrics_every=1)
    fig = plot_result(res, tmp_path / f"{loss}.png")
    assert (tmp_path / f"{loss}.png").read_bytes()[:8] == PNG_MAGIC
    assert_every_panel_labelled(fig)
    assert_no_hidden_overlaps(fig)


@pytest.fixture(scope="module")
def ufm_demo_fig():
    from nclab.ufm.problems import LOSSES

    comparison = {loss: [solve(loss, name, seed=0, gtol=1e-8, metrics_every=0, max_iter=200)
                         for name in ("lbfgs", "rtr")] for loss in LOSSES}
    sweep = [{"n_points": n, "d": 3, "tau": 5.0, "frame_potential_excess": 10.0 ** -n} for n in (5, 10, 20)]
    return ufm_demo_figure(comparison, sweep)


def test_ufm_demo_figure_is_a_grid_of_reasonable_aspect(ufm_demo_fig):
    w, h = ufm_demo_fig.get_size_inches()
    assert w / h < 3
    assert_every_panel_labelled(ufm_demo_fig)
    assert_no_hidden_overlaps(ufm_demo_fig)
    rows = {round(ax.get_position().y0, 3) for ax in drawn_axes(ufm_demo_fig)}
    assert len(rows) >= 2


def test_ufm_demo_titles_give_the_sizes(ufm_demo_fig):
    titles = [ax.get_title() for ax in drawn_axes(ufm_demo_fig)]
    assert len(titles) == 5
    for t in titles:
        assert "n=" in t and "d=" in t, t
        if t.startswith("sphere"):  # n points on the sphere of R^d: no classes, a temperature
            assert "τ=" in t, t
        else:
            assert "K=" in t, t
    assert "τ=5" in next(t for t in titles if t.startswith("normalized"))


def test_problem_title():
    assert problem_title({"loss": "ce", "K": 4, "n": 5, "d": 4, "lw": 5e-3}) == "ce: K=4, n=5/class, d=4"
    assert problem_title({"loss": "sphere", "n_points": 4, "d": 3, "tau": 5.0}) == "sphere: n=4 points, d=3, τ=5"


# ------------------------------------------------------------------------------------------------
# the metrics demo
# ------------------------------------------------------------------------------------------------
def test_metrics_demo_figure_has_y_labels_and_marks_the_coinciding_nc2_lines(tmp_path):
    from rich.console import Console

    # --quick-like: three noise levels; n = 500 per class, where nc2_maxangle_means and
    # nc2_equinorm_means agree within 2% (at n = 50 they differ by 30%, and are not marked)
    with open(tmp_path / "table.txt", "w") as f:
        res = run_metrics_demo(tmp_path, console=Console(file=f), sigmas=(1e-3, 1e-2, 1e-1))
    assert (tmp_path / "metrics_demo.png").read_bytes()[:8] == PNG_MAGIC
    fig = metrics_figure(res["results"], res["config"])
    assert_every_panel_labelled(fig)
    assert_no_hidden_overlaps(fig)
    labels = [ln.get_label() for ln in fig.axes[1].get_lines()]
    assert any(lab.startswith("nc2_maxangle_means") and "coincide" in lab for lab in labels)
    assert "K=10" in fig._suptitle.get_text()


# ------------------------------------------------------------------------------------------------
# the landscape survey's figures, from a hand-made survey
# ------------------------------------------------------------------------------------------------
def fake_survey():
    solvers = ["lbfgs", "gd"]
    summary = [{"config": c, "d": d, "solver": s, "fraction_global": 0.5 if s == "gd" else 1.0,
                "kinds": {"inconclusive": 1 if s == "gd" else 0}, "runs": 4}
               for c, d in (("ce", 4), ("mse", 4)) for s in solvers]
    runs = [{"config": c, "solver": s, "stop_reason": "max_iter" if s == "gd" else "gtol",
             "iterations": 1000 if s == "gd" else 30 + i} for i, c in enumerate(("ce", "mse")) for s in solvers]
    points = [{"lambda_min": -0.3, "relative_gap": 0.5, "point": "origin", "kind": "strict_saddle"},
              {"lambda_min": 1e-3, "relative_gap": 0.0, "point": "found", "kind": "global_minimiser"},
              {"lambda_min": -1e-2, "relative_gap": 0.1, "point": "lowdim", "kind": "strict_saddle"}]
    spectra = {"saddle": {"eigenvalues": [-0.3, 0.0, 0.2, 1.0], "point": "origin", "kind": "strict_saddle"},
               "minimiser": {"eigenvalues": [0.0, 1e-3, 0.5, 2.0], "point": "found", "kind": "global_minimiser"},
               "problem": {"loss": "ce", "K": 4, "n": 5, "d": 4}}
    return {"settings": {"solvers": solvers, "K": 4, "n": 5, "seeds": 4, "gd_max_iter": 1000},
            "starts": {"summary": summary, "runs": runs},
            "catalogue": {"points": points, "spectra": spectra}}


@pytest.mark.parametrize("make", [starts_figure, catalogue_figure])
def test_landscape_figures_label_every_panel(make):
    fig = make(fake_survey())
    assert_every_panel_labelled(fig)
    assert_no_hidden_overlaps(fig)
    assert all(math.isfinite(v) for ax in fig.axes for v in ax.get_ylim())
