"""Landscape analysis of the UFMs: certificates, classification of critical points, escapes.

(Filled in as the package grows.)
"""

from nclab.ufm.landscape.certificate import (
    Certificate,
    NullDirection,
    certificate,
    criticality_identities,
    negative_direction,
)
from nclab.ufm.landscape.points import find_critical_point, lowdim_point, origin, random_point, relative_grad_norm

__all__ = ["origin", "lowdim_point", "find_critical_point", "random_point", "relative_grad_norm",
           "Certificate", "NullDirection", "certificate", "criticality_identities", "negative_direction"]
