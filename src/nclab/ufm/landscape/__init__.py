"""Landscape analysis of the unconstrained feature models: which critical point is which, and why.

The theorems (REFERENCE.md sections 2 and 5): for the CE UFM with d > K (Zhu et al. 2021) and
d = K (Gu & Shen 2024), the MSE UFM (Zhou et al. 2022; Gu & Shen 2024) and the normalized UFM on
the oblique manifold (Yaras et al. 2022), every critical point is a global minimiser or a strict
saddle.  This package checks such claims point by point and returns numbers (it never prints).

=================  ==========================================================================
``certificate``    Zhu et al.'s Lemma C.4 test sigma_1(grad_Z L) <= sqrt(lw lh), the identities
                   of critical points (balance, 1^T W = 0, rank), the explicit null-space
                   direction of negative curvature and its Rayleigh quotient
``classify``       :func:`classify`: not critical / global minimiser / strict saddle / local
                   non-global minimiser / inconclusive, with the thresholds and the evidence
``points``         the origin, embedded lower-dimensional minimisers (saddles), a
                   Levenberg-Marquardt critical-point finder, random points
``escape``         a step along negative curvature and a solver run to the minimiser
=================  ==========================================================================

Example
-------
>>> from nclab.ufm.problems import make_problem
>>> from nclab.ufm.landscape import classify, lowdim_point, escape
>>> p = make_problem("ce", K=4, n=3, d=4)
>>> x = lowdim_point(p, 2)            # a 2-dimensional minimiser, zero padded: a saddle
>>> c = classify(p, x)
>>> c.kind, c.certificate["holds"], c.lambda_min < 0
('strict_saddle', False, True)
>>> escape(p, x, c)[1]["status"]
'optimal'
"""

from nclab.ufm.landscape.certificate import (
    Certificate,
    NullDirection,
    certificate,
    criticality_identities,
    negative_direction,
)
from nclab.ufm.landscape.classify import (
    EIG_TOL,
    GAP_TOL,
    GRAD_TOL,
    KINDS,
    STRUCTURE_TOL,
    Classification,
    classify,
)
from nclab.ufm.landscape.escape import ESCAPE_DECREASE, escape
from nclab.ufm.landscape.points import find_critical_point, lowdim_point, origin, random_point, relative_grad_norm

__all__ = [
    "Certificate",
    "NullDirection",
    "certificate",
    "criticality_identities",
    "negative_direction",
    "Classification",
    "classify",
    "KINDS",
    "GRAD_TOL",
    "EIG_TOL",
    "GAP_TOL",
    "STRUCTURE_TOL",
    "escape",
    "ESCAPE_DECREASE",
    "origin",
    "lowdim_point",
    "find_critical_point",
    "random_point",
    "relative_grad_norm",
]
