"""Unconstrained feature model (UFM) problems: cost, hand-derived derivatives, closed-form optima.

Every problem is the objective of REFERENCE.md section 2, with exactly its normalisation, written in
nclab's batch-first convention (W is K x d with rows w_k, H is N x d with rows h_{k,i} -- the
paper's H^T --, b in R^K).  Samples are ordered class-major: ``labels = arange(K).repeat_interleave
(class_sizes)``.  A problem bundles a manifold, a cost, its gradient and Hessian-vector product
(derived by hand: matrix products only, no autograd), a per-point cache, its closed form
(``optimum``, ``optimal_point``), the structure of its minimiser (``structure``) and its symmetries.

The package, one owner per fact:

=================  ==========================================================================
``base``           :class:`UFMProblem`: per-point cache, counters, evaluation API, accessors,
                   the O(d) symmetry orbit
``logit``          the stable cross-entropy kernels; logits ``Z = s H W^T + 1 b^T`` and their
                   derivatives; the penalised CE/MSE base with the critical point W = H = 0
``ce``             :class:`CEProblem` (Zhu et al. 2021)
``mse``            :class:`MSEProblem` (Zhou et al. 2022)
``normalized``     :class:`NormalizedProblem` (Yaras et al. 2022), oblique manifold
``sphere``         :class:`SphereProblem` (Lu & Steinerberger 2022), n points on S^{d-1}
this module        :func:`make_problem`, :data:`DEFAULTS` (the factory's and the CLI's
                   defaults, and which options each problem takes), :data:`LOSSES`
=================  ==========================================================================

Example
-------
>>> from nclab.ufm.problems import make_problem
>>> p = make_problem("ce", K=4, n=5, d=4, lw=5e-3, lh=5e-3)
>>> x = p.optimal_point(seed=0)
>>> abs(p.cost(x) - p.optimum) < 1e-12
True
>>> sorted(p.structure(x))
['bias_spread', 'etf_W', 'feature_ratio_error', 'norm_error']
"""

from __future__ import annotations

from typing import Any

from nclab.ufm.problems.memory import check_memory
from nclab.ufm.problems.base import DTYPES, UFMProblem, resolve_device_dtype
from nclab.ufm.problems.ce import CEProblem
from nclab.ufm.problems.logit import (
    _CELoss,
    _LogitProblem,
    _MSELoss,
    _PenalizedUFM,
    _softmax_hvp,
    ce_label_gradient,
    stable_cross_entropy,
    zero_point_min_eig,
)
from nclab.ufm.problems.mse import MSEProblem
from nclab.ufm.problems.normalized import NormalizedProblem
from nclab.ufm.problems.sphere import SphereProblem

__all__ = [
    "UFMProblem",
    "CEProblem",
    "MSEProblem",
    "NormalizedProblem",
    "SphereProblem",
    "make_problem",
    "resolve_device_dtype",
    "DTYPES",
    "zero_point_min_eig",
    "stable_cross_entropy",
    "ce_label_gradient",
    "LOSSES",
    "DEFAULTS",
]

#: The factory's (and the CLI's) defaults, and the options each problem takes (its keys).
#: beta = sqrt(n lw lh) ~ 0.011 < 1/K, so the CE and MSE optima are non-trivial collapsed
#: configurations; d = None means d = K.
DEFAULTS: dict[str, dict[str, Any]] = {
    "ce": dict(K=4, n=5, d=None, lw=5e-3, lh=5e-3, lb=0.0, bias=True, class_sizes=None),
    "mse": dict(K=4, n=5, d=None, lw=5e-3, lh=5e-3, lb=0.0, bias=True),
    "normalized": dict(K=4, n=5, d=None, tau=5.0),
    "sphere": dict(n_points=4, d=3, tau=5.0),
}
LOSSES = tuple(DEFAULTS)

_CLASSES: dict[str, type[UFMProblem]] = {
    "ce": CEProblem,
    "mse": MSEProblem,
    "normalized": NormalizedProblem,
    "sphere": SphereProblem,
}

#: Option aliases: ``n`` names the number of points of a problem without classes.
_ALIASES = {"n": "n_points"}


def make_problem(loss: str = "ce", *, memory_limit: float | None = None, device=None, dtype=None,
                 **options) -> UFMProblem:
    """Build a UFM problem by name with the defaults of :data:`DEFAULTS` (the CLI's options).

    ``loss`` is one of ``"ce"``, ``"mse"``, ``"normalized"``, ``"sphere"``.  ``d`` defaults to K
    (ce, mse, normalized).  For ``"sphere"``, ``n`` is accepted as an alias of ``n_points``.
    Options set to None take their default.  Unknown options raise ValueError naming them.
    Before anything is allocated the memory a solve needs is estimated
    (:func:`nclab.ufm.problems.memory.estimate_bytes`) and a problem above ``memory_limit`` GiB
    (None: the memory available now, on the GPU for a CUDA device; ``math.inf``: no check) is
    refused with both numbers.  ``device`` ("cpu", "cuda", "cuda:N"; None: the CPU) and ``dtype``
    (torch.float64 or torch.float32, or their names; None: float64) say where the problem computes
    (:func:`nclab.ufm.problems.base.resolve_device_dtype`: a CUDA device where torch has none is
    refused); the solvers follow the problem.

    >>> make_problem("mse", K=3, n=2).describe()["d"]
    3
    """
    if not isinstance(loss, str) or loss.lower() not in _CLASSES:
        raise ValueError(f"unknown loss {loss!r}; choose one of {', '.join(LOSSES)}")
    loss = loss.lower()
    opts = dict(DEFAULTS[loss])
    for alias, name in _ALIASES.items():
        if alias in options and alias not in opts and name in opts:
            if options.get(name) is not None:
                raise ValueError(f"give either {name} or its alias {alias} for the {loss} problem, not both")
            options = dict(options)
            options[name] = options.pop(alias)
    unknown = sorted(set(options) - set(opts))
    if unknown:
        raise ValueError(
            f"unknown option(s) {', '.join(unknown)} for loss {loss!r}; allowed: {', '.join(opts)}"
        )
    for k, v in options.items():
        if v is not None:
            opts[k] = v
    if "d" in opts and opts["d"] is None:
        opts["d"] = opts["K"]
    if opts.get("class_sizes") is not None and options.get("n") is None:
        opts["n"] = None  # the class sizes define the classes; n is then their rounded mean
    dev, dt = resolve_device_dtype(device, dtype)
    check_memory(loss, opts, memory_limit, device=dev, dtype=dt)
    return _CLASSES[loss](**opts, device=dev, dtype=dt)
