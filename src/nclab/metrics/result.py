"""The result type of the NC metrics: their names, one-line descriptions and :class:`NCMetrics`.

:data:`METRIC_NAMES` is the vocabulary of REFERENCE.md section 3, in its order; JSON output, the
command line and the training records use exactly these keys.  :class:`NCMetrics` is a frozen
dataclass with one field per metric (None where not computable) and the context that produced
them (K, N, d, the rank of Sigma_B, the eigenvalue cut-off, the global-mean convention, the
classes without a sample).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

__all__ = ["METRIC_NAMES", "METRIC_DESCRIPTIONS", "NCMetrics"]

#: The metric names of REFERENCE.md section 3, in its order.  JSON output uses exactly these keys.
METRIC_NAMES = (
    "nc1",
    "nc1_trace_ratio",
    "cdnv",
    "nc2_equinorm_means",
    "nc2_equinorm_W",
    "nc2_maxangle_means",
    "nc2_maxangle_W",
    "nc2_etf_means",
    "nc2_etf_W",
    "nc3",
    "nc3_duality_gram",
    "nc4",
    "bias_collapse",
)

METRIC_DESCRIPTIONS = {
    "nc1": "Tr(Sigma_W Sigma_B^+)/K (Papyan et al. 2020)",
    "nc1_trace_ratio": "Tr(Sigma_W)/Tr(Sigma_B)",
    "cdnv": "mean_{k<l} (v_k+v_l)/(2|mu_k-mu_l|^2) (Galanti et al. 2022)",
    "nc2_equinorm_means": "std/mean of |mu_k - mu_G|",
    "nc2_equinorm_W": "std/mean of |w_k|",
    "nc2_maxangle_means": "mean_{k!=l} |cos(mu_k,mu_l) + 1/(K-1)|",
    "nc2_maxangle_W": "mean_{k!=l} |cos(w_k,w_l) + 1/(K-1)|",
    "nc2_etf_means": "|G/|G|_F - (I-J/K)/sqrt(K-1)|_F, G = Mc Mc^T (Zhu et al.)",
    "nc2_etf_W": "|G/|G|_F - (I-J/K)/sqrt(K-1)|_F, G = W W^T (Zhu et al.)",
    "nc3": "|W/|W|_F - Mc/|Mc|_F|_F^2 (Papyan et al.)",
    "nc3_duality_gram": "|W Mc^T/|W Mc^T|_F - (I-J/K)/sqrt(K-1)|_F (Zhu et al.)",
    "nc4": "fraction where argmax(W h + b) != nearest class mean",
    "bias_collapse": "|(I - J/K)(W mu_G + b)|: the non-constant logit offset at the global mean",
}


@dataclass(frozen=True)
class NCMetrics:
    """All metrics of REFERENCE.md section 3 (None where not computable, e.g. W-metrics without a
    classifier, nc4 before its second pass).  ``as_dict()`` has exactly :data:`METRIC_NAMES`."""

    nc1: float | None = None
    nc1_trace_ratio: float | None = None
    cdnv: float | None = None
    nc2_equinorm_means: float | None = None
    nc2_equinorm_W: float | None = None
    nc2_maxangle_means: float | None = None
    nc2_maxangle_W: float | None = None
    nc2_etf_means: float | None = None
    nc2_etf_W: float | None = None
    nc3: float | None = None
    nc3_duality_gram: float | None = None
    nc4: float | None = None
    bias_collapse: float | None = None
    # context, not metrics
    num_classes: int = 0
    num_samples: int = 0
    dim: int = 0
    sigma_b_rank: int = 0
    rtol: float = 0.0
    weighted_mean: bool = False
    empty_classes: tuple[int, ...] = field(default_factory=tuple)

    def as_dict(self) -> dict[str, float | None]:
        """The metrics only, keyed by their REFERENCE.md names; non-finite values become None."""
        out = {}
        for name in METRIC_NAMES:
            v = getattr(self, name)
            out[name] = None if v is None or not math.isfinite(v) else float(v)
        return out

    def with_nc4(self, value: float | None) -> "NCMetrics":
        """A copy with nc4 set (from :class:`nclab.metrics.NC4Counter`'s second pass)."""
        return dataclasses.replace(self, nc4=None if value is None else float(value))
