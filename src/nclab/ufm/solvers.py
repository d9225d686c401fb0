"""Compatibility shim: the solvers now live in the package :mod:`nclab.ufm.optim` (one module per
optimizer, line searches as objects, one result type); see its docstring for the options and the
stopping rules.  This module only re-exports the public names and will be removed once every
caller imports the new path.

>>> import nclab.ufm.optim
>>> from nclab.ufm.solvers import SOLVERS
>>> SOLVERS is nclab.ufm.optim.SOLVERS
True
"""

from nclab.ufm.optim import (
    CONVERGED_REASONS,
    SOLVERS,
    STOP_GRADIENT,
    STOP_GRADIENT_ABS,
    STOP_STALLED,
    STOP_TARGET,
    SolverLog,
    conjugate_gradient,
    get_solver,
    gradient_descent,
    lbfgs,
    riemannian_gradient_descent,
    trust_regions,
)

__all__ = [
    "SolverLog",
    "STOP_GRADIENT",
    "STOP_GRADIENT_ABS",
    "STOP_TARGET",
    "STOP_STALLED",
    "CONVERGED_REASONS",
    "lbfgs",
    "gradient_descent",
    "riemannian_gradient_descent",
    "conjugate_gradient",
    "trust_regions",
    "SOLVERS",
    "get_solver",
]
