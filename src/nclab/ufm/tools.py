"""Deprecated location of :mod:`nclab.ufm.diagnostics` (kept as a re-export for now)."""

from nclab.ufm.diagnostics import (  # noqa: F401
    OrbitProjector,
    check_gradient,
    check_hessian,
    hessian_extreme_eigs,
    hessian_spectrum,
    taylor_slope,
)

__all__ = ["check_gradient", "check_hessian", "hessian_extreme_eigs", "hessian_spectrum", "taylor_slope"]
