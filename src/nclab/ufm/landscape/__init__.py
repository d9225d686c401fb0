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

__all__ = ["Certificate", "NullDirection", "certificate", "criticality_identities", "negative_direction"]
