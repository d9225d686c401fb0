"""The one result type of the solvers, :class:`SolverLog`, and the stop reasons.

Every solver returns ``(x, SolverLog)``.  A run's ``stop_reason`` is one of the constants below or
one of the plain strings ``"max_iter"``, ``"max_time"``, ``"callback"``, ``"line search failed (no
decrease)"``, ``"trust region collapsed"``, ``"non-finite objective or gradient (diverged)"``;
``converged`` is True exactly for :data:`CONVERGED_REASONS`.  ``SolverLog.to_dict`` gives the JSON
form through :func:`nclab.io.json_ready`, the one JSON cleaner of nclab.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from nclab.io import json_ready

__all__ = [
    "SolverLog",
    "STOP_GRADIENT",
    "STOP_GRADIENT_ABS",
    "STOP_TARGET",
    "STOP_STALLED",
    "CONVERGED_REASONS",
]

#: Stop reasons that mean convergence (``SolverLog.converged``); every other reason does not.
STOP_GRADIENT = "relative gradient norm <= gtol"
STOP_GRADIENT_ABS = "gradient norm <= gtol_abs"
STOP_TARGET = "objective <= f_target"
CONVERGED_REASONS = frozenset({STOP_GRADIENT, STOP_GRADIENT_ABS, STOP_TARGET})
#: The stalled-progress stop (not convergence); formatted with ``stall_iters``.
STOP_STALLED = "stalled: objective flat to ftol and gradient norm not halving for {} iterations"


@dataclass
class SolverLog:
    """What a solver did.

    Attributes
    ----------
    solver : the solver's name (``SOLVERS`` key).
    iterations : one dict per recorded iteration: ``iter``, ``objective``, ``grad_norm`` (Riemannian
        gradient norm), ``time`` (seconds since the start, metric/callback time excluded) and, every
        ``metrics_every`` iterations and at the end, ``metrics`` (``problem.metrics(x)``).
    stop_reason : why it stopped (:data:`STOP_GRADIENT`, ``"max_iter"``, ...).
    converged : whether ``stop_reason`` is a convergence test (:data:`CONVERGED_REASONS`); False
        for caps, stalls, line-search or trust-region failures, divergence and callback stops.
    n_cost, n_grad, n_hess : evaluations of the cost, the gradient and Hessian-vector products.
    seconds : total solver time (metric/callback time excluded).
    options : the options the solver ran with.
    state : what a continuation may reuse (L-BFGS: ``inverse_hessian_scale``); not serialised.
    """

    solver: str
    iterations: list = field(default_factory=list)
    stop_reason: str = ""
    converged: bool = False
    n_cost: int = 0
    n_grad: int = 0
    n_hess: int = 0
    seconds: float = 0.0
    options: dict = field(default_factory=dict)
    #: What a continuation of the run may reuse (not serialised): L-BFGS leaves
    #: ``inverse_hessian_scale``, s^T y / y^T y of its newest pair (its next first step).
    state: dict = field(default_factory=dict)

    @property
    def n_iter(self) -> int:
        """Number of iterations done (the last record's ``iter``)."""
        return int(self.iterations[-1]["iter"]) if self.iterations else 0

    @property
    def final(self) -> dict:
        """The last iteration record."""
        return self.iterations[-1] if self.iterations else {}

    def to_dict(self) -> dict:
        """A JSON-serialisable dict (non-finite floats become None; numpy scalars and one-element
        tensors Python numbers; callables their name): :func:`nclab.io.json_ready`."""
        return json_ready(
            {
                "solver": self.solver,
                "stop_reason": self.stop_reason,
                "converged": self.converged,
                "n_iter": self.n_iter,
                "n_cost": self.n_cost,
                "n_grad": self.n_grad,
                "n_hess": self.n_hess,
                "seconds": self.seconds,
                "options": self.options,
                "iterations": self.iterations,
            }
        )
