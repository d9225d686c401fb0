"""The network experiment of the yaras2022 target: learned vs normalized head, epochs to collapse.

Each (head, seed) is an ordinary training run (:func:`nclab.nets.train.train`, an MLP on a
balanced MNIST subset on the CPU, the recipe of :class:`nclab.nets.config.TrainConfig`: SGD,
momentum 0.9, weight decay 5e-4, learning rate divided by 10 at 1/3 and 2/3 of the epochs) in
``<out>/nets/<head>_seed<s>``; a finished run is not repeated (``resume=True``: start or continue).
After every epoch the run logs nc1 = Tr(Sigma_W Sigma_B^+)/K of the training features
(REFERENCE.md section 3; for the normalized head the unit features h/|h| the head sees) and the test
accuracy.  nc1 is invariant to the scale of the features, so the two heads' values compare.

``epochs_to(log, threshold)`` is the first epoch whose nc1 is at or below the threshold (None when
the run never gets there).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Callable

__all__ = ["HEADS", "epochs_to", "train_heads"]

#: The two heads compared (Yaras et al. 2022: normalized features and classifier vs a learned one).
HEADS = ("learned", "normalized")


def epochs_to(log: list[dict], threshold: float) -> int | None:
    """The first epoch (1-based) whose logged nc1 is <= ``threshold``; None if none is."""
    for r in log:
        v = r.get("nc1")
        if v is not None and math.isfinite(v) and v <= threshold:
            return int(r["epoch"])
    return None


def train_heads(out: Path, *, seeds: list[int], per_class: int, test_per_class: int, epochs: int,
                data_dir: str, device: str = "cpu", threads: int | None = 1, tau: float = 10.0,
                progress: Callable[[str], None] | None = None) -> dict:
    """Train every head of :data:`HEADS` with every seed; returns ``{head: [run, ...]}``, a run
    being ``{"seed", "out", "log": [{epoch, nc1, train_acc, test_acc, train_loss}], "final",
    "seconds"}``.  FileNotFoundError (from :mod:`nclab.nets.data`) when the data set is missing."""
    import torch

    runs: dict[str, list[dict]] = {h: [] for h in HEADS}
    saved_threads = torch.get_num_threads()  # train() sets torch's threads for the process: restore them
    try:
        _train_all(runs, out, seeds, per_class, test_per_class, epochs, data_dir, device, threads, tau, progress)
    finally:
        torch.set_num_threads(saved_threads)
    return runs


def _train_all(runs, out, seeds, per_class, test_per_class, epochs, data_dir, device, threads, tau, progress):
    from nclab.nets.config import TrainConfig
    from nclab.nets.rundir import read_log
    from nclab.nets.train import train

    for seed in seeds:
        for head in HEADS:
            folder = Path(out) / "nets" / f"{head}_seed{seed}"
            cfg = TrainConfig(dataset="mnist", model="mlp", head=head, per_class=per_class,
                              test_per_class=test_per_class, epochs=epochs, device=device, seed=seed,
                              data_dir=str(data_dir), out=str(folder), resume=True, threads=threads, tau=tau,
                              eval_schedule="every")
            if progress is not None:
                progress(f"  train {head} head, seed {seed}: mlp, {per_class}/class, {epochs} epochs")
            summary = train(cfg)
            log = [{k: r.get(k) for k in ("epoch", "nc1", "train_acc", "test_acc", "train_loss")}
                   for r in read_log(folder) if "nc1" in r]
            runs[head].append({"seed": seed, "out": str(folder), "log": log, "final": log[-1] if log else {},
                               "seconds": summary.get("total_seconds")})
