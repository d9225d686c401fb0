"""The options of a training run: :class:`TrainConfig`, their validation, and the schedules they imply.

This module owns what a run is asked to do: every field with its default (the papers' recipe,
Papyan, Han & Donoho 2020 / Zhu et al. 2021), their checks at the boundary (through
:mod:`nclab._validation`, one wording for all of nclab), the learning-rate milestones
(:func:`lr_milestones`, :func:`schedule_milestones`), the evaluated epochs (:func:`eval_epochs`) and
which options may change when a run is resumed or extended (:data:`RESUME_FREE`,
:func:`check_resumable`, :func:`restored_config`, :func:`plan_resume`).

Resuming and extending.  ``nclab train --resume DIR`` restores every option from DIR/config.json
(:func:`restored_config`); options given again must agree with it, except those of
:data:`RESUME_FREE` and ``epochs`` / ``milestones``.  A larger ``epochs`` extends the run
(also a finished one); the learning-rate schedule of the epochs already trained never changes
(:func:`plan_resume`):

* if the new length's milestones (1/3 and 2/3 of it, or ``milestones``) divide the rate after the
  same epochs among those already trained, they are used: the extended run is the uninterrupted run
  of the new length, log and weights bit for bit (e.g. a run stopped with ``stop_after`` before its
  first milestone);
* otherwise (a finished run: its milestones at 1/3 and 2/3 of the old length have passed, those of
  the new length would rewrite the past) the run keeps its milestones (``milestones`` is pinned to
  them in config.json) and the schedule continues: the rate stays at its last value for the added
  epochs.  Equality with an uninterrupted run of the new length with the default schedule is then
  impossible; the extended run equals the uninterrupted run of the new length with
  ``milestones`` = the old run's, bit for bit.  Explicit ``milestones`` that would change the past
  are refused.

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

__all__ = ["TrainConfig", "EVAL_SCHEDULES", "RESUME_FREE", "RESUME_RESET", "lr_milestones", "schedule_milestones",
           "eval_epochs", "check_resumable", "restored_config", "plan_resume"]

#: Values of ``TrainConfig.eval_schedule``.
EVAL_SCHEDULES = ("every", "log")

#: Config fields that may differ between a run and its resumption.
RESUME_FREE = ("resume", "stop_after", "device", "data_dir", "out", "download", "threads")

#: Free fields that belong to one invocation: :func:`restored_config` does not take them from config.json.
RESUME_RESET = ("resume", "stop_after", "out", "download")


@dataclass
class TrainConfig:
    """All options of ``nclab train`` (the CLI is a thin layer over this dataclass).

    Defaults are the papers' recipe (Papyan et al. 2020; Zhu et al. 2021): SGD, momentum 0.9,
    weight decay 5e-4, batch 128, lr 0.05 divided by 10 at 1/3 and 2/3 of ``epochs``.

    Fields
    ------
    dataset : "mnist", "fashion-mnist" or "cifar10" (:data:`nclab.nets.data.DATASETS`; CIFAR-10's
        images have 3 channels of 32 x 32, :func:`nclab.nets.data.input_shape`).
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
    milestones : epochs after which the learning rate is divided by 10 (None: 1/3 and 2/3 of
        ``epochs``, :func:`lr_milestones`); an extended run may pin them (see the module docstring).
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
    milestones: list[int] | None = None

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
        if self.milestones is not None:
            if not isinstance(self.milestones, (list, tuple)):
                raise ValueError(f"milestones must be a list of epochs, got {self.milestones!r}")
            for m in self.milestones:
                check_int("milestones", m, minimum=1)
            self.milestones = sorted(set(int(m) for m in self.milestones))
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


def schedule_milestones(config: TrainConfig) -> list[int]:
    """The milestones a run uses: ``config.milestones``, or 1/3 and 2/3 of ``config.epochs``."""
    return sorted(set(config.milestones)) if config.milestones is not None else lr_milestones(config.epochs)


def eval_epochs(config: TrainConfig) -> list[int]:
    """The epochs (1-based) after which metrics are computed: all of them, or about
    ``eval_points`` log-spaced ones (always including the first and the last)."""
    E = config.epochs
    if config.eval_schedule == "every" or config.eval_points >= E:
        return list(range(1, E + 1))
    pts = np.unique(np.round(np.logspace(0, math.log10(E), config.eval_points)).astype(int))
    return sorted(set(int(p) for p in pts) | {1, E})


def check_resumable(config: TrainConfig, saved: dict, out: str | Path, ignore: tuple[str, ...] = ()) -> None:
    """Raise ValueError if ``config`` differs from a run's saved config (``saved``, its
    config.json) in a field that a resumption may not change (all but :data:`RESUME_FREE` and
    ``ignore``)."""
    diff = {
        k: (saved.get(k), v)
        for k, v in config.to_dict().items()
        if k not in RESUME_FREE and k not in ignore and saved.get(k) != v
    }
    if diff:
        shown = ", ".join(f"{k}: {a!r} in the run, {b!r} now" for k, (a, b) in diff.items())
        raise ValueError(f"cannot resume {out}: the options differ from the run's config.json ({shown})")


def restored_config(saved: dict, explicit: dict, out: str | Path) -> TrainConfig:
    """The configuration of ``nclab train --resume``: the fields of ``saved`` (config.json) but
    those of :data:`RESUME_RESET`, then the ``explicit`` options (name -> value) given again; their
    agreement with ``saved`` is checked by :func:`plan_resume`."""
    base = TrainConfig.from_dict({k: v for k, v in saved.items() if k not in RESUME_RESET})
    return dataclasses.replace(base, **(dict(explicit) | {"resume": True, "out": str(out)}))


def plan_resume(config: TrainConfig, saved: dict, out: str | Path, epochs_done: int) -> TrainConfig:
    """The configuration that continues the run of ``saved`` (its config.json) after
    ``epochs_done`` epochs: ``config``, with ``milestones`` pinned to the run's when a new
    ``epochs`` would change the rate of epochs already trained (the rule of the module docstring).

    Raises ValueError when an option but :data:`RESUME_FREE`, ``epochs`` and ``milestones``
    differs (the names and both values), when ``epochs`` is below ``epochs_done``, and when
    explicit ``milestones`` would change the past."""
    check_resumable(config, saved, out, ignore=("epochs", "milestones"))
    if config.epochs < epochs_done:
        raise ValueError(f"cannot resume {out} with epochs {config.epochs}: the run has done {epochs_done} "
                         f"epochs; give --epochs {epochs_done} or more")
    old = saved.get("lr_milestones")
    if old is None:
        old = schedule_milestones(TrainConfig.from_dict(saved))
    new = schedule_milestones(config)

    def past(ms):
        return [m for m in ms if m <= epochs_done]

    if past(new) == past(old):
        return config
    if config.milestones is not None and config.milestones != saved.get("milestones"):
        raise ValueError(f"cannot resume {out} with milestones {new}: the run divided the learning rate after "
                         f"epochs {past(old)} of the {epochs_done} it has done, these would change that past; "
                         f"keep {past(old)} and add only later epochs")
    return dataclasses.replace(config, milestones=sorted(old))
