"""`nclab reproduce zhu2021`: the claims of Zhu et al. 2021, checked.

Zhu, Ding, Zhou, Li, You, Sulam & Qu, "A geometric analysis of neural collapse with unconstrained
features", NeurIPS 2021 (REFERENCE.md sections 2, 4 and 5).  The claims, each with its experiment:

=====================================  =========================================================
key                                    evidence
=====================================  =========================================================
``zhu2021.global_minimisers``          CE UFM solved by L-BFGS for d in {K-1, K, 2K} and several
                                       seeds against the closed form (gap, structure, NC metrics)
                                       (:mod:`._zhu_ufm`)
``zhu2021.phase_transition``           a sweep of lw = lh across beta = sqrt(n lw lh) = 1/K:
                                       collapse below, W = H = 0 above; figure
                                       ``phase_transition.png`` (:mod:`._zhu_ufm`)
``zhu2021.benign_landscape``           constructed and found critical points classified, the
                                       Lemma C.4 certificate, every solver from random starts;
                                       figure ``landscape.png`` (:mod:`._zhu_landscape`)
``zhu2021.nonnegative_features``       the CE UFM over H >= 0 by L-BFGS-B: what its minimisers
                                       are (:mod:`._zhu_nonneg`)
``zhu2021.fixed_etf_parameters``       ResNet18 parameter counts and training state, d = 512 vs
                                       d = K with a fixed ETF (:mod:`._zhu_practice`)
``zhu2021.fixed_etf_training``         learned vs fixed-ETF d = K MLPs on MNIST / Fashion-MNIST
                                       (CPU) (:mod:`._zhu_practice`)
``zhu2021.fixed_etf_resnet18_gpu``     ResNet18 with peak GPU memory (full scale, GPU only;
                                       otherwise "not run" with the reason)
=====================================  =========================================================

Scales (``ctx.scale``): tiny (the tests: K = 3; about 6 s for the target on 2 cores), quick
(``make demo``: K = 4, MLPs for 12 epochs on 500 images per class; about 35 s on 2 cores), full (K = 10 for the minimiser, phase-transition and non-negative claims,
K = 4 with two weight decays and five seeds for the landscape, MLPs on the whole training sets for
50 epochs and three seeds, ResNet18 for 200 epochs on a GPU).  Every UFM solver honours
``ctx.option("max_iter")`` (a test hook: capped at 2 iterations the UFM claims fail); the training
claims read ``resnet_gpu`` (run the ResNet18 claim below the full scale), ``resnet_epochs``,
``resnet_per_class``, ``resnet_test_per_class``.  Results are written under ``ctx.out`` as JSON
(one file per claim), the training runs under ``ctx.out/heads`` and ``ctx.out/resnet18``, and PNG
figures.

Example
-------
>>> from pathlib import Path                                  # doctest: +SKIP
>>> from nclab.reproduce.claims import Context
>>> from nclab.reproduce.zhu2021 import TARGET
>>> claims = TARGET.run(Context(out=Path("out/zhu2021"), scale="tiny"))
>>> [(c.key, c.verdict) for c in claims][:2]
[('zhu2021.global_minimisers', 'passed'), ('zhu2021.phase_transition', 'passed')]
"""

from __future__ import annotations

from nclab.reproduce._zhu_common import CITATION, TITLE
from nclab.reproduce._zhu_landscape import claim_landscape
from nclab.reproduce._zhu_nonneg import claim_nonnegative
from nclab.reproduce._zhu_practice import claim_parameters, claim_resnet_gpu, claim_training
from nclab.reproduce._zhu_ufm import claim_global_minimisers, claim_phase_transition
from nclab.reproduce.claims import Claim, Context, Target

__all__ = ["TARGET", "CLAIMS", "run"]

#: The claims in report order: functions ``ctx -> Claim``.
CLAIMS = (
    claim_global_minimisers,
    claim_phase_transition,
    claim_landscape,
    claim_nonnegative,
    claim_parameters,
    claim_training,
    claim_resnet_gpu,
)


def run(ctx: Context) -> list[Claim]:
    """Check every claim of :data:`CLAIMS` at ``ctx.scale``; figures and JSON go to ``ctx.out``."""
    ctx.out.mkdir(parents=True, exist_ok=True)
    return [claim(ctx) for claim in CLAIMS]


TARGET = Target(name="zhu2021", title=TITLE, citation=CITATION, run=run)
