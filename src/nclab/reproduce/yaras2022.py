"""Yaras, Wang, Zhu, Balzano & Qu 2022, "Neural collapse with normalized features: a geometric
analysis over the Riemannian manifold" (NeurIPS 2022): its claims, checked.

The normalized UFM (REFERENCE.md section 2) lives on the oblique manifold (product of spheres):

    f(W, H) = (1/N) sum_{k,i} CE(tau W h_{k,i}, k),   |w_k| = |h_{k,i}| = 1,  tau > 0.

Claims (REFERENCE.md section 5), one :class:`~nclab.reproduce.claims.Claim` each:

``yaras2022.global_minimisers`` (the global optimality theorem, d >= K-1)
    Every global minimiser has W a simplex ETF and h_{k,i} = w_k, with
    f* = log(1 + (K-1) exp(-tau K/(K-1))).  Checked: a Riemannian solver (L-BFGS and conjugate
    gradients in turn; the first of up to :data:`STARTS` random starts that reaches f*), for every temperature of the scale (up
    to tau = 100) and d in {K-1, K, 2K}; its end point's objective against f* (recomputed here, not
    read from the problem), the Gram matrix of W against the ETF's and max |h_{k,i} - w_k|.
``yaras2022.strict_saddles`` (the landscape theorem)
    Every other Riemannian critical point is a strict saddle.  Checked: the embedded
    lower-dimensional minimisers ``lowdim:D`` (D < K-1: saddles; D >= K-1: global) and critical
    points found by Levenberg-Marquardt on grad f = 0 from random points, each classified by
    :func:`nclab.ufm.landscape.classify` (negative deflated Riemannian Hessian eigenvalue confirmed
    by a decrease of f); plus the dense Hessian spectra of a saddle and of the minimiser.
``yaras2022.random_starts`` (the practical consequence)
    Riemannian solvers from random starts reach the global minimum.  Checked: every solver of
    :data:`SOLVERS` from several seeds, temperatures and dimensions d >= K; each end point
    classified.  At d = K-1 a start can end elsewhere (seen here: K = 3, d = 2, tau = 10, conjugate
    gradients stopped at a critical point far above f*), which is why the global-minimiser claim
    takes the first of up to :data:`STARTS` starts there and reports how many it needed.
``yaras2022.network_collapse`` and ``yaras2022.network_accuracy`` (the experiments)
    In a network, normalized features and classifiers reach collapse in fewer epochs and learn at
    least as good representations.  Checked: an MLP on a balanced MNIST subset on the CPU, learned
    vs normalized head (:mod:`nclab.reproduce._yaras_nets`), several seeds; the epochs until nc1
    falls to a threshold and the final test accuracy (within a stated margin).  The paper uses
    ResNets on CIFAR-10/100 and mini-ImageNet: this is a small-scale test of the same statement.

Solver caps honour ``ctx.option("max_iter")`` (a test hook: 2 iterations turn the UFM claims to
failed).  ``ctx.option("nc1_threshold")`` and ``ctx.option("nets")`` (a dict of the network
settings) override the network experiment.  Run through ``nclab reproduce yaras2022``.
"""

from __future__ import annotations

import statistics

import numpy as np

from nclab.reproduce._yaras_ufm import (
    closed_form_optimum,
    critical_point_rows,
    gram_error,
    lambda_bars,
    pyplot,
    savefig,
    solve_row,
    worst,
)
from nclab.reproduce.claims import Claim, Context, Evidence, Figure, Table, Target, check, headline

__all__ = ["TARGET", "SETTINGS", "SOLVERS", "GAP_TOL", "STRUCTURE_TOL", "run"]

#: The Riemannian solvers of nclab.ufm.optim (gradient descent, conjugate gradients, trust regions,
#: L-BFGS, all with the oblique manifold's projection and retraction).
SOLVERS = ("rgd", "rcg", "rtr", "lbfgs")
#: A solver's end point is the global minimiser when its objective is within GAP_TOL (relative) of
#: f* and its structure errors are below STRUCTURE_TOL (the solvers stop at relative gradient 1e-8).
GAP_TOL = 1e-6
STRUCTURE_TOL = 1e-4
#: The solvers of the global-minimiser claim, in turn over (tau, d).  Trust regions are left to the
#: random-start claim: at large tau their inner iterations make them the slowest by far.
MINIMISER_SOLVERS = ("lbfgs", "rcg")
#: Starts per (tau, d) for the global-minimiser claim: the first that reaches f* with the structure
#: counts (at d = K-1 a start may end at another critical point; how many were needed is reported).
STARTS = 3

#: Per scale.  ``minimisers``: (K, n, taus, dims); ``starts``: (K, n, (tau, d) cases, seeds);
#: ``saddles``: (K, n, tau, dims, found starts); ``nets``: the network experiment.
SETTINGS = {
    "tiny": {
        "minimisers": dict(K=3, n=2, taus=[2.0, 50.0], dims=["K"]),
        "starts": dict(K=3, n=2, cases=[(5.0, "K")], seeds=1),
        "saddles": dict(K=3, n=2, tau=5.0, dims=["K"], found=1),
        "nets": dict(seeds=[0], per_class=20, test_per_class=20, epochs=6, threshold=0.41, margin=0.05),
    },
    "quick": {
        "minimisers": dict(K=4, n=5, taus=[1.0, 5.0, 20.0, 50.0, 100.0], dims=["K-1", "K", "2K"]),
        "starts": dict(K=4, n=5, cases=[(5.0, "K"), (5.0, "2K"), (50.0, "K")], seeds=2),
        "saddles": dict(K=4, n=3, tau=5.0, dims=["K-1", "K", "2K"], found=2),
        "nets": dict(seeds=[0, 1, 2], per_class=50, test_per_class=50, epochs=12, threshold=0.2, margin=0.01),
    },
    "full": {
        "minimisers": dict(K=10, n=10, taus=[1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0], dims=["K-1", "K", "2K"]),
        "starts": dict(K=10, n=10, cases=[(t, d) for t in (5.0, 20.0, 50.0) for d in ("K", "2K")], seeds=5),
        "saddles": dict(K=6, n=4, tau=5.0, dims=["K-1", "K", "2K"], found=5),
        "nets": dict(seeds=[0, 1, 2, 3, 4], per_class=500, test_per_class=None, epochs=60, threshold=0.1,
                     margin=0.005),
    },
}

SOURCE = "Yaras et al. 2022"


def _dim(spec, K: int) -> int:
    return {"K-1": K - 1, "K": K, "2K": 2 * K}[spec] if isinstance(spec, str) else int(spec)


def _problem(K, n, d, tau):
    from nclab.ufm.problems import make_problem

    return make_problem("normalized", K=K, n=n, d=d, tau=tau)


# ---------------------------------------------------------------------------------------------------
def _global_minimisers(ctx: Context) -> Evidence:
    plt = pyplot()

    s = SETTINGS[ctx.scale]["minimisers"]
    K, n = s["K"], s["n"]
    cap = ctx.option("max_iter")
    rows = []
    for i, tau in enumerate(s["taus"]):
        for j, dspec in enumerate(s["dims"]):
            d = _dim(dspec, K)
            solver = MINIMISER_SOLVERS[(i + j) % len(MINIMISER_SOLVERS)]
            tries = []
            for t in range(STARTS):  # the best of up to STARTS starts: the claim is about the minimiser's form
                seed = ctx.seed + 100 * i + 10 * j + t
                x, row = solve_row(_problem(K, n, d, tau), "normalized", solver, seed, max_iter=cap, classify=False)
                W, H = x[0].detach(), x[1].detach()
                labels = np.repeat(np.arange(K), n)
                row["gram_error"] = gram_error(W, "simplex")
                row["feature_error"] = float((H - W[labels]).norm(dim=1).max())
                row["ok"] = bool(row["converged"] and row["relative_gap"] is not None
                                 and abs(row["relative_gap"]) <= GAP_TOL and row["gram_error"] <= STRUCTURE_TOL
                                 and row["feature_error"] <= STRUCTURE_TOL)
                tries.append(row)
                if row["ok"]:
                    break
            row = min(tries, key=lambda r: (not r["ok"], r["objective"]))
            row["starts"] = len(tries)
            row["other_starts"] = [{k: r[k] for k in ("seed", "status", "stop_reason", "relative_gap")}
                                   for r in tries if r is not row]
            rows.append(row)
            ctx.say(f"  tau={tau:g} d={d} {solver}: {row['status']}, gap {row['relative_gap']:.1e} "
                    f"({len(tries)} start(s))")
    fig, ax = plt.subplots(figsize=(6, 4))
    taus = np.array(sorted(set(s["taus"])))
    grid = np.geomspace(taus.min(), taus.max(), 200)
    ax.plot(grid, [closed_form_optimum("normalized", K, n, tau=t) for t in grid], "k-", lw=1,
            label="closed form f* = log(1+(K-1)exp(-tau K/(K-1)))")
    for dspec, marker in zip(s["dims"], "os^"):
        d = _dim(dspec, K)
        pts = [(r["params"]["tau"], r["objective"]) for r in rows if r["d"] == d]
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker, mfc="none", ms=8, label=f"solver, d = {d}")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("temperature tau")
    ax.set_ylabel("objective f at the solver's end point")
    ax.set_title(f"Normalized UFM, K = {K}, n = {n}")
    ax.legend(fontsize=7)
    fig_path = savefig(fig, ctx.out, "yaras2022_minimisers.png")
    bad = [r for r in rows if not r["ok"]]
    numbers = {
        "K": K, "n": n, "taus": s["taus"], "dims": [_dim(d, K) for d in s["dims"]], "runs": len(rows),
        "passed_runs": len(rows) - len(bad), "max_abs_relative_gap": worst(abs(r["relative_gap"]) for r in rows
                                                                          if r["relative_gap"] is not None),
        "max_gram_error": worst(r["gram_error"] for r in rows), "max_feature_error": worst(r["feature_error"] for r in rows),
        "all_converged": all(r["converged"] for r in rows), "gap_tolerance": GAP_TOL,
        "structure_tolerance": STRUCTURE_TOL, "max_iter": cap,
        "starts_needed": [r["starts"] for r in rows], "max_starts": STARTS,
        "rows": [{k: r[k] for k in ("params", "d", "solver", "seed", "starts", "other_starts", "converged",
                                    "stop_reason", "iterations", "objective", "optimum", "relative_gap", "gram_error",
                                    "feature_error", "ok")}
                 for r in rows],
    }
    table = Table("Solver end points vs the closed form", ["tau", "d", "solver", "iters", "f", "f*", "rel. gap",
                                                           "Gram err", "max|h-w|", "ok"],
                  [[r["params"]["tau"], r["d"], r["solver"], r["iterations"], f"{r['objective']:.4e}",
                    f"{r['optimum']:.4e}", f"{r['relative_gap']:.1e}", f"{r['gram_error']:.1e}",
                    f"{r['feature_error']:.1e}", "yes" if r["ok"] else "NO"] for r in rows])
    summary = (f"{len(rows) - len(bad)} of {len(rows)} (tau, d) cases (tau {min(s['taus']):g}..{max(s['taus']):g}, "
               f"d in {numbers['dims']}) reach the closed-form minimiser; largest errors: relative gap to f* "
               f"{numbers['max_abs_relative_gap']:.1e}, Gram matrix of W vs the ETF's {numbers['max_gram_error']:.1e}, "
               f"max |h - w| {numbers['max_feature_error']:.1e}.")
    return Evidence(headline=headline('{passed_runs}/{runs} runs, gap {max_abs_relative_gap:.0e}', numbers), passed=not bad, summary=summary, numbers=numbers, tables=[table],
                    figures=[Figure(fig_path, "Objective at the solvers' end points against the closed-form "
                                              "optimum f*(tau), for each feature dimension d.")],
                    reason="" if not bad else f"{len(bad)} run(s) off the closed form or not converged "
                                              f"(first: tau={bad[0]['params']['tau']}, d={bad[0]['d']}, "
                                              f"{bad[0]['solver']}, {bad[0]['stop_reason']})")


# ---------------------------------------------------------------------------------------------------
def _strict_saddles(ctx: Context) -> Evidence:
    plt = pyplot()

    from nclab.ufm.diagnostics import hessian_spectrum
    from nclab.ufm.landscape.spec import make_point

    s = SETTINGS[ctx.scale]["saddles"]
    K, n, tau = s["K"], s["n"], s["tau"]
    cap = ctx.option("max_iter")
    rows = []
    for dspec in s["dims"]:
        d = _dim(dspec, K)
        rows += critical_point_rows(_problem(K, n, d, tau), "normalized", found_starts=s["found"],
                                    finder_max_iter=cap, progress=ctx.say)
    constructed = [r for r in rows if r["expected"] is not None]
    saddles = [r for r in constructed if r["expected"] == "strict_saddle"]
    found = [r for r in rows if r["point"] == "found"]
    ok_constructed = all(r["matches"] for r in constructed)
    ok_found = all(r["kind"] in ("global_minimiser", "strict_saddle") for r in found)
    non_global = [r for r in rows if r["kind"] != "global_minimiser"]
    # spectra of a saddle and of the minimiser of the smallest problem
    ps = _problem(K, n, K, tau)
    spectra = {}
    for name, spec in (("saddle lowdim:1", "lowdim:1"), ("minimiser", None)):
        x = make_point(ps, spec, seed=0)[0] if spec else ps.optimal_point(seed=0)
        spectra[name] = [float(v) for v in hessian_spectrum(ps, x, deflate=True)]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4), gridspec_kw={"width_ratios": [2, 1]})
    lambda_bars(ax1, rows)
    ax1.set_title(f"Critical points of the normalized UFM, K = {K}, n = {n}, tau = {tau:g}")
    for name, ev in spectra.items():
        ax2.plot(range(1, len(ev) + 1), ev, ".", label=name)
    ax2.set_yscale("symlog", linthresh=1e-3)
    ax2.set_xlabel("eigenvalue index (ascending)")
    ax2.set_ylabel("Riemannian Hessian eigenvalue (orbit deflated)")
    ax2.set_title(f"Dense spectra, d = K = {K}")
    ax2.legend(fontsize=7)
    fig_path = savefig(fig, ctx.out, "yaras2022_saddles.png")
    numbers = {
        "K": K, "n": n, "tau": tau, "dims": [_dim(d, K) for d in s["dims"]], "points": len(rows),
        "constructed": len(constructed), "constructed_as_predicted": sum(bool(r["matches"]) for r in constructed),
        "constructed_saddles": len(saddles), "found": len(found),
        "found_kinds": {k: sum(r["kind"] == k for r in found) for k in sorted({r["kind"] for r in found})},
        "non_global_points": len(non_global),
        "non_global_strict_saddles": sum(r["kind"] == "strict_saddle" for r in non_global),
        "largest_saddle_lambda_min": worst(r["lambda_min"] for r in rows if r["kind"] == "strict_saddle"),
        "local_non_global_minimisers": sum(r["kind"] == "local_non_global_minimiser" for r in rows),
        "spectrum_saddle_min": min(spectra["saddle lowdim:1"]), "spectrum_minimiser_min": min(spectra["minimiser"]),
        "rows": [{k: r.get(k) for k in ("d", "label", "expected", "kind", "lambda_min", "eig_threshold", "grad_norm",
                                        "objective", "relative_gap_classify", "matches")} for r in rows],
    }
    table = Table("Critical points, classified", ["d", "point", "expected", "kind", "lambda_min", "threshold"],
                  [[r["d"], r["label"], r["expected"] or "any but local min", r["kind"],
                    None if r["lambda_min"] is None else f"{r['lambda_min']:.3e}",
                    None if r["eig_threshold"] is None else f"{r['eig_threshold']:.1e}"] for r in rows])
    passed = ok_constructed and ok_found and len(non_global) > 0 and all(r["kind"] == "strict_saddle" for r in non_global)
    summary = (f"{numbers['non_global_strict_saddles']} of {len(non_global)} non-global critical points are strict "
               f"saddles (largest lambda_min {numbers['largest_saddle_lambda_min']:.2e}); "
               f"{numbers['constructed_as_predicted']} of {len(constructed)} constructed points are the predicted kind; "
               f"found points: {numbers['found_kinds']}.")
    reason = "" if passed else "; ".join(
        f"{r['label']} at d={r['d']}: {r['kind']} (expected {r['expected'] or 'a saddle or the minimiser'})"
        for r in rows if (r["expected"] and not r["matches"]) or r["kind"] not in ("global_minimiser", "strict_saddle"))
    return Evidence(headline=headline('{constructed_as_predicted}/{constructed} as predicted', numbers), passed=passed, summary=summary, numbers=numbers, tables=[table], reason=reason or
                    ("" if passed else "no non-global critical point was examined"),
                    figures=[Figure(fig_path, "Left: smallest deflated Riemannian Hessian eigenvalue at each "
                                              "constructed and found critical point (red: strict saddle, green: "
                                              "global minimiser). Right: the whole spectrum at a saddle and at the "
                                              "minimiser.")])


# ---------------------------------------------------------------------------------------------------
def _random_starts(ctx: Context) -> Evidence:
    plt = pyplot()

    s = SETTINGS[ctx.scale]["starts"]
    K, n = s["K"], s["n"]
    cap = ctx.option("max_iter")
    rows = []
    for tau, dspec in s["cases"]:
        d = _dim(dspec, K)
        for solver in SOLVERS:
            for seed in range(ctx.seed, ctx.seed + s["seeds"]):
                _, row = solve_row(_problem(K, n, d, tau), "normalized", solver, seed, max_iter=cap)
                rows.append(row)
        ctx.say(f"  tau={tau:g} d={d}: {sum(r['kind'] == 'global_minimiser' for r in rows)}/{len(rows)} global")
    per_solver = {}
    for solver in SOLVERS:
        rs = [r for r in rows if r["solver"] == solver]
        per_solver[solver] = {"runs": len(rs), "global": sum(r["kind"] == "global_minimiser" for r in rs),
                              "converged": sum(r["converged"] for r in rs),
                              "median_iterations": statistics.median(r["iterations"] for r in rs),
                              "max_relative_gap": worst(abs(r["relative_gap"]) for r in rs)}
    fig, ax = plt.subplots(figsize=(6, 4))
    for i, solver in enumerate(SOLVERS):
        rs = [r for r in rows if r["solver"] == solver]
        gaps = [max(abs(r["relative_gap"]), 1e-17) for r in rs]
        ax.plot([i + 0.1 * (k % 5 - 2) for k in range(len(rs))], gaps, "o", mfc="none",
                color="tab:green" if all(r["kind"] == "global_minimiser" for r in rs) else "tab:red")
    ax.set_xticks(range(len(SOLVERS)))
    ax.set_xticklabels(SOLVERS)
    ax.set_yscale("log")
    ax.axhline(GAP_TOL, color="k", ls="--", lw=0.8, label=f"gap tolerance {GAP_TOL:g}")
    ax.set_xlabel("Riemannian solver")
    ax.set_ylabel("|f - f*| / f* at the end point")
    ax.set_title(f"Random starts, normalized UFM, K = {K}, n = {n}")
    ax.legend(fontsize=7)
    fig_path = savefig(fig, ctx.out, "yaras2022_random_starts.png")
    n_global = sum(r["kind"] == "global_minimiser" for r in rows)
    numbers = {"K": K, "n": n, "cases": [{"tau": t, "d": _dim(d, K)} for t, d in s["cases"]], "seeds": s["seeds"],
               "solvers": list(SOLVERS), "runs": len(rows), "global": n_global,
               "converged": sum(r["converged"] for r in rows), "per_solver": per_solver, "max_iter": cap,
               "rows": [{k: r.get(k) for k in ("params", "d", "solver", "seed", "converged", "stop_reason", "iterations",
                                               "relative_gap", "kind", "lambda_min")} for r in rows]}
    table = Table("Random starts per solver", ["solver", "runs", "global min", "converged", "median iters",
                                               "max rel. gap"],
                  [[k, v["runs"], v["global"], v["converged"], v["median_iterations"],
                    None if v["max_relative_gap"] is None else f"{v['max_relative_gap']:.1e}"]
                   for k, v in per_solver.items()])
    passed = n_global == len(rows)
    cases = ", ".join(f"tau {c['tau']:g} d {c['d']}" for c in numbers["cases"])
    summary = (f"{n_global} of {len(rows)} random starts ({', '.join(SOLVERS)}; {s['seeds']} seed(s) for each of "
               f"{cases}) end at a point classified global minimiser.")
    bad = [r for r in rows if r["kind"] != "global_minimiser"]
    return Evidence(headline=headline('{global}/{runs} global', numbers), passed=passed, summary=summary, numbers=numbers, tables=[table],
                    figures=[Figure(fig_path, "Relative gap to f* at the end of each random start, per solver "
                                              "(green: every start of the solver classified global).")],
                    reason="" if passed else f"{len(bad)} start(s) not at the global minimum (first: "
                                             f"{bad[0]['solver']} seed {bad[0]['seed']}, {bad[0]['kind']}, "
                                             f"{bad[0]['stop_reason']})")


# ---------------------------------------------------------------------------------------------------
class _Nets:
    """The network runs, trained once for both network claims."""

    def __init__(self, ctx: Context):
        self.ctx = ctx
        self._runs = None
        self._error: Exception | None = None
        s = dict(SETTINGS[ctx.scale]["nets"])
        s.update(ctx.option("nets", {}) or {})
        s["threshold"] = ctx.option("nc1_threshold", s["threshold"])
        self.settings = s

    def runs(self):
        from nclab.reproduce._yaras_nets import train_heads

        if self._error is not None:
            raise self._error
        if self._runs is None:
            s, ctx = self.settings, self.ctx
            data_dir = str(ctx.data_dir) if ctx.data_dir is not None else "../shared/data"
            try:
                self._runs = train_heads(ctx.out, seeds=[ctx.seed + k for k in s["seeds"]], per_class=s["per_class"],
                                         test_per_class=s["test_per_class"], epochs=s["epochs"], data_dir=data_dir,
                                         device="cpu" if ctx.device == "cpu" else ctx.device, progress=ctx.say)
            except Exception as exc:  # both claims report it
                self._error = exc
                raise
        return self._runs


def _not_run_without_data(exc: Exception) -> Evidence:
    return Evidence(passed=None, summary="MNIST was not found, so the networks were not trained.",
                    reason=f"no data: {exc}")


def _network_collapse(ctx: Context, nets: _Nets) -> Evidence:
    plt = pyplot()

    from nclab.reproduce._yaras_nets import HEADS, epochs_to

    try:
        runs = nets.runs()
    except FileNotFoundError as exc:
        return _not_run_without_data(exc)
    s = nets.settings
    thr, E = s["threshold"], s["epochs"]
    reach = {h: [epochs_to(r["log"], thr) for r in runs[h]] for h in HEADS}
    # a run that never reaches the threshold counts as epochs + 1 (censored)
    counted = {h: [e if e is not None else E + 1 for e in reach[h]] for h in HEADS}
    med = {h: statistics.median(counted[h]) for h in HEADS}
    final_nc1 = {h: [r["final"].get("nc1") for r in runs[h]] for h in HEADS}
    passed = med["normalized"] < med["learned"]
    fig, ax = plt.subplots(figsize=(6, 4))
    for h, colour in zip(HEADS, ("tab:blue", "tab:orange")):
        for k, r in enumerate(runs[h]):
            ax.plot([p["epoch"] for p in r["log"]], [p["nc1"] for p in r["log"]], color=colour, alpha=0.8,
                    label=f"{h} head" if k == 0 else None)
    ax.axhline(thr, color="k", ls="--", lw=0.8, label=f"threshold {thr:g}")
    ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.set_ylabel("nc1 = Tr(Sigma_W Sigma_B^+)/K (training set)")
    ax.set_title(f"MLP on MNIST, {s['per_class']} images/class, {len(s['seeds'])} seed(s)")
    ax.legend(fontsize=7)
    fig_path = savefig(fig, ctx.out, "yaras2022_network_nc1.png")
    numbers = {"threshold": thr, "epochs": E, "per_class": s["per_class"], "test_per_class": s["test_per_class"],
               "seeds": [r["seed"] for r in runs["learned"]], "epochs_to_threshold": reach,
               "median_epochs_to_threshold": med, "final_nc1": final_nc1,
               "nc1_curves": {h: [[p["nc1"] for p in r["log"]] for r in runs[h]] for h in HEADS}}
    table = Table(f"Epochs until nc1 <= {thr:g} (never: '-')", ["head", *[f"seed {r['seed']}" for r in runs["learned"]],
                                                               "median", "final nc1 (median)"],
                  [[h, *[e if e is not None else "-" for e in reach[h]], med[h],
                    f"{statistics.median(v for v in final_nc1[h] if v is not None):.3g}"] for h in HEADS])
    summary = (f"Median epochs until nc1 <= {thr:g}: normalized {med['normalized']}, learned {med['learned']} "
               f"({E + 1} = never within {E} epochs); final nc1 (median) normalized "
               f"{statistics.median(final_nc1['normalized']):.3g}, learned {statistics.median(final_nc1['learned']):.3g}.")
    return Evidence(headline=headline('epochs {median_epochs_to_threshold[normalized]} vs {median_epochs_to_threshold[learned]}', numbers), passed=passed, summary=summary, numbers=numbers, tables=[table],
                    figures=[Figure(fig_path, "nc1 of the training features per epoch, learned vs normalized head, "
                                              "every seed; the dashed line is the threshold.")],
                    reason="" if passed else "the normalized head did not reach the threshold in fewer epochs "
                                             "(median over seeds) at this scale")


def _network_accuracy(ctx: Context, nets: _Nets) -> Evidence:
    from nclab.reproduce._yaras_nets import HEADS

    try:
        runs = nets.runs()
    except FileNotFoundError as exc:
        return _not_run_without_data(exc)
    margin = nets.settings["margin"]
    acc = {h: [r["final"].get("test_acc") for r in runs[h]] for h in HEADS}
    train_acc = {h: [r["final"].get("train_acc") for r in runs[h]] for h in HEADS}
    mean = {h: float(np.mean(acc[h])) for h in HEADS}
    passed = mean["normalized"] >= mean["learned"] - margin
    numbers = {"test_acc": acc, "train_acc": train_acc, "mean_test_acc": mean, "margin": margin,
               "difference": mean["normalized"] - mean["learned"],
               "test_images": (nets.settings["test_per_class"] or "all") if nets.settings else None}
    table = Table("Final test accuracy", ["head", *[f"seed {r['seed']}" for r in runs["learned"]], "mean"],
                  [[h, *[f"{a:.4f}" for a in acc[h]], f"{mean[h]:.4f}"] for h in HEADS])
    summary = (f"Mean final test accuracy: normalized {mean['normalized']:.4f}, learned {mean['learned']:.4f} "
               f"(difference {numbers['difference']:+.4f}, margin {margin:g}).")
    return Evidence(headline=headline('accuracy {difference:+.4f}', numbers), passed=passed, summary=summary, numbers=numbers, tables=[table],
                    reason="" if passed else f"the normalized head's mean test accuracy is more than {margin:g} "
                                             "below the learned head's")


# ---------------------------------------------------------------------------------------------------
def run(ctx: Context) -> list[Claim]:
    """Check every claim of Yaras et al. 2022 at ``ctx.scale`` (module docstring)."""
    ctx.out.mkdir(parents=True, exist_ok=True)
    claims = [
        check(ctx, "yaras2022.global_minimisers", title="Global minimisers: simplex ETF, h = w, closed-form f*",
              source=f"{SOURCE}, the global optimality theorem",
              statement="On the oblique manifold (|w_k| = |h_{k,i}| = 1) with d >= K-1, every global minimiser of "
                        "the normalized UFM has the classifiers W forming a simplex ETF and every feature equal to "
                        "its classifier, h_{k,i} = w_k; the optimal value is f* = log(1 + (K-1) exp(-tau K/(K-1))), "
                        "for every temperature tau > 0.",
              criterion=f"A Riemannian solver (L-BFGS and conjugate gradients in turn), for every tau and d of the "
                        f"scale, from the first of up to {STARTS} random starts that gets there, converges to a point whose objective is within {GAP_TOL:g} (relative) "
                        f"of f* computed from the formula, whose Gram matrix W W^T matches the ETF's "
                        f"(K I - J)/(K-1) to {STRUCTURE_TOL:g} entrywise, and with max |h_{{k,i}} - w_k| <= "
                        f"{STRUCTURE_TOL:g}. Numbers: max_abs_relative_gap, max_gram_error, max_feature_error, "
                        "all_converged, starts_needed.",
              experiment=lambda: _global_minimisers(ctx)),
        check(ctx, "yaras2022.strict_saddles", title="Every other Riemannian critical point is a strict saddle",
              source=f"{SOURCE}, the benign landscape theorem",
              statement="Every Riemannian critical point of the normalized UFM that is not a global minimiser is a "
                        "strict saddle: its Riemannian Hessian has a negative eigenvalue.",
              criterion="Constructed critical points (the lower-dimensional minimisers embedded, lowdim:D) are the "
                        "kind the theory predicts (D < K-1: strict saddle, D >= K-1: global minimiser) and critical "
                        "points found by Levenberg-Marquardt on grad f = 0 are global minimisers or strict saddles; "
                        "every non-global one has a negative deflated Riemannian Hessian eigenvalue confirmed by a "
                        "decrease of f (nclab.ufm.landscape.classify). Numbers: non_global_points, "
                        "non_global_strict_saddles, largest_saddle_lambda_min, local_non_global_minimisers.",
              experiment=lambda: _strict_saddles(ctx)),
        check(ctx, "yaras2022.random_starts", title="Riemannian solvers from random starts reach the global minimum",
              source=f"{SOURCE}, consequence of the benign landscape",
              statement="Because every non-global critical point is a strict saddle, Riemannian first- and "
                        "second-order methods from random initialisation find the global minimiser.",
              criterion=f"Every start of every solver ({', '.join(SOLVERS)}), for each seed and each (tau, d >= K) "
                        "case of the scale, ends at a point classified global minimiser. Numbers: runs, global, per_solver.",
              experiment=lambda: _random_starts(ctx)),
    ]
    nets = _Nets(ctx)
    s = nets.settings
    claims += [
        check(ctx, "yaras2022.network_collapse", title="Normalized features collapse in fewer epochs",
              source=f"{SOURCE}, experiments",
              statement="In deep networks, normalizing the features and the classifier (on spheres, logits = tau "
                        "cosines) makes the features collapse faster than with a learned linear classifier.",
              criterion=f"An MLP (3 x 512, batch norm) on MNIST ({s['per_class']} images per class), learned vs "
                        f"normalized head (tau = 10), seeds {s['seeds']}, {s['epochs']} epochs with the default "
                        f"recipe; passed when the median over seeds of the first epoch with nc1 <= {s['threshold']:g} "
                        "is smaller for the normalized head (a run that never gets there counts as epochs + 1). "
                        "Numbers: epochs_to_threshold, median_epochs_to_threshold, final_nc1.",
              experiment=lambda: _network_collapse(ctx, nets)),
        check(ctx, "yaras2022.network_accuracy", title="Normalized features generalise at least as well",
              source=f"{SOURCE}, experiments",
              statement="Normalized features and classifiers learn representations that generalise at least as "
                        "well as a learned classifier's.",
              criterion=f"The same runs: the normalized head's mean final test accuracy is at least the learned "
                        f"head's minus {s['margin']:g}. Numbers: mean_test_acc, difference, margin.",
              experiment=lambda: _network_accuracy(ctx, nets)),
    ]
    return claims


TARGET = Target(
    name="yaras2022",
    title="Neural collapse with normalized features: a geometric analysis over the Riemannian manifold",
    citation="C. Yaras, P. Wang, Z. Zhu, L. Balzano, Q. Qu. NeurIPS 2022.",
    run=run,
)
