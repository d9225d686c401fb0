"""The options of a training run: :class:`TrainConfig`, their validation, and the schedules they imply.

This module owns what a run is asked to do: every field with its default (the papers' recipe,
Papyan, Han & Donoho 2020 / Zhu et al. 2021), their checks at the boundary (through
:mod:`nclab._validation`, one wording for all of nclab), the learning-rate milestones
(:func:`lr_milestones`), the evaluated epochs (:func:`eval_epochs`) and which options may change
when a run is resumed (:data:`RESUME_FREE`, :func:`check_resumable`).

>>> from nclab.nets.config import TrainConfig, lr_milestones
>>> TrainConfig(model="mlp", epochs=6).validate().epochs
6
>>> lr_milestones(200)
[66, 133]
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from nclab._validation import check_bool, check_choice, check_int, check_real

__all__ = ["TrainConfig", "EVAL_SCHEDULES", "RESUME_FREE", "lr_milestones", "eval_epochs", "check_resumable"]

#: Values of ``TrainConfig.eval_schedule``.
EVAL_SCHEDULES = ("every", "log")

#: Config fields that may differ between a run and its resumption.
RESUME_FREE = ("resume", "stop_after", "device", "data_dir", "out", "download", "threads")


@dataclass
class TrainConfig:
    """All options of ``nclab train`` (the CLI is a thin layer over this dataclass).

    Defaults are the papers' recipe (Papyan et al. 2020; Zhu et al. 2021): SGD, momentum 0.9,
    weight decay 5e-4, batch 128, lr 0.05 divided by 10 at 1/3 and 2/3 of ``epochs``.

    Fields
    ------
    dataset : "mnist" or "fashion-mnist" (:data:`nclab.nets.data.DATASETS`).
    model : "resnet18" (CIFAR-style, 3x3 stem) or "mlp".
    head : "learned", "etf" (fixed simplex ETF, a buffer) or "normalized" (unit W and h/|h|).
    feature_dim : penultimate dimension d (None: the backbone's own, 512 for both).
        An ETF head needs d >= K-1.
    tau : temperature of the normalized head: logits = tau * cosines, so with K = 10 the
        cross-entropy cannot go below log(1 + 9 exp(-10 tau/9)) (the normalized UFM's optimum,
        REFERENCE.md section 2): 1.38 at tau = 1, 1.3e-4 at the default tau = 10.
    bias : head bias (None: the head's default, learned True, etf False, normalized none).
    per_class : balanced training subset of n images per class (None: all); seeded by ``seed``.
    test_per_class : likewise for the test set (None: all of it).
    epochs, lr, momentum, weight_decay, batch_size : the optimiser (batch_size is global under DDP).
    eval_batch_size : batch of the evaluation passes (no gradients, so it can be large).
    eval_schedule : "every" epoch, or "log": about ``eval_points`` log-spaced epochs (always the last).
    device : "auto" (cuda if available), "cpu", "cuda" or "cuda:N".
    seed : model initialisation, head seed, data subset and the per-epoch data order.
    data_dir, download : where the data sets are (see :func:`nclab.nets.data.load_dataset`).
    out : run directory.  resume : continue from ``out/checkpoint.pt``.
    stop_after : stop (checkpointed) after this epoch although ``epochs`` is larger: a job that
        must fit a time limit continues later with ``resume``; the schedule still uses ``epochs``.
    threads : torch's intra-op CPU threads for this process (None: torch's default).  One thread
        per process is much faster than two when another process competes for the cores.
    etf_rotation : rotate the fixed ETF by the seed (:class:`nclab.nets.heads.ETFHead`: a
        rotation that fixes the all-ones vector).  Off by default, as in Zhu et al.'s code (the
        frame on the first K axes).  The backbones end with a ReLU, so features are non-negative;
        a general Haar rotation with d = K left a class outside the reach of the non-negative
        orthant (seed 0, K = d = 10: training accuracy stuck at 90%), which is why the head only
        rotates within the complement of the all-ones vector, where every class stays reachable.
    """

    dataset: str = "mnist"
    model: str = "resnet18"
    head: str = "learned"
    feature_dim: int | None = None
    tau: float = 10.0
    bias: bool | None = None
    per_class: int | None = None
    test_per_class: int | None = None
    epochs: int = 200
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 5e-4
    batch_size: int = 128
    eval_batch_size: int = 1024
    eval_schedule: str = "every"
    eval_points: int = 30
    device: str = "auto"
    seed: int = 0
    data_dir: str = "../shared/data"
    download: bool = False
    out: str = "runs/train"
    resume: bool = False
    stop_after: int | None = None
    threads: int | None = None
    etf_rotation: bool = False

    def validate(self) -> "TrainConfig":
        """Check every field; raise ValueError naming the option, the value and what is allowed
        (the wording of :mod:`nclab._validation`, e.g. ``epochs must be >= 1, got 0``)."""
        from nclab.nets.backbones import MODELS
        from nclab.nets.data import DATASETS
        from nclab.nets.heads import HEADS

        check_choice("dataset", self.dataset, DATASETS)
        check_choice("model", self.model, MODELS)
        check_choice("head", self.head, HEADS)
        check_choice("eval_schedule", self.eval_schedule, EVAL_SCHEDULES)
        for name, minimum in (("epochs", 1), ("batch_size", 1), ("eval_batch_size", 1), ("eval_points", 1),
                              ("seed", 0)):
            check_int(name, getattr(self, name), minimum=minimum)
        for name in ("feature_dim", "per_class", "test_per_class", "stop_after", "threads"):
            if getattr(self, name) is not None:
                check_int(name, getattr(self, name), minimum=1)
        for name in ("tau", "lr"):
            check_real(name, getattr(self, name), positive=True)
        for name in ("momentum", "weight_decay"):
            check_real(name, getattr(self, name), nonnegative=True)
        for name in ("download", "resume", "etf_rotation"):
            check_bool(name, getattr(self, name))
        if self.bias is not None:
            check_bool("bias", self.bias)
        if self.head == "etf" and self.feature_dim is not None:
            from nclab.nets.data import num_classes

            K = num_classes(self.dataset)
            if self.feature_dim < K - 1:
                raise ValueError(f"a fixed simplex-ETF head of K={K} classes needs d >= K-1 = {K - 1}, "
                                 f"got d={self.feature_dim}; use --feature-dim {K} (Zhu et al.'s d = K)")
            if self.feature_dim == K - 1:
                raise ValueError(
                    f"a fixed simplex-ETF head with d = K-1 = {K - 1} cannot be trained on ReLU features: "
                    "in K-1 dimensions the K frame vectors sum to zero, so non-negative features leave "
                    f"some classes unreachable (training stays at chance); use --feature-dim {K} or more "
                    "(the frame of Zhu et al. 2021), or --head learned / normalized")
        if self.head == "normalized" and self.bias:
            raise ValueError("the normalized head has no bias (logits are tau * cosines); drop --bias")
        device = str(self.device)
        if not (device in ("auto", "cpu", "cuda") or device.startswith("cuda:")):
            raise ValueError(f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {device!r}")
        return self

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "TrainConfig":
        """The config of ``data`` (e.g. a run's config.json); keys that are not fields are ignored."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


def lr_milestones(epochs: int) -> list[int]:
    """Epochs after which the learning rate is divided by 10: 1/3 and 2/3 of the run (Papyan et
    al. 2020), at least 1 and never repeated.  ``lr_milestones(200) == [66, 133]``."""
    return sorted({max(1, epochs // 3), max(1, (2 * epochs) // 3)})


def eval_epochs(config: TrainConfig) -> list[int]:
    """The epochs (1-based) after which metrics are computed: all of them, or about
    ``eval_points`` log-spaced ones (always including the first and the last)."""
    E = config.epochs
    if config.eval_schedule == "every" or config.eval_points >= E:
        return list(range(1, E + 1))
    pts = np.unique(np.round(np.logspace(0, math.log10(E), config.eval_points)).astype(int))
    return sorted(set(int(p) for p in pts) | {1, E})


def check_resumable(config: TrainConfig, saved: dict, out: str | Path) -> None:
    """Raise ValueError if ``config`` differs from a run's saved config (``saved``, its
    config.json) in a field that a resumption may not change (all but :data:`RESUME_FREE`)."""
    diff = {
        k: (saved.get(k), v)
        for k, v in config.to_dict().items()
        if k not in RESUME_FREE and saved.get(k) != v
    }
    if diff:
        shown = ", ".join(f"{k}: {a!r} in the run, {b!r} now" for k, (a, b) in diff.items())
        raise ValueError(f"cannot resume {out}: the options differ from the run's config.json ({shown})")
