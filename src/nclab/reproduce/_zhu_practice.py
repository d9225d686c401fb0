"""zhu2021 claims (e): a fixed simplex-ETF classifier with d = K in practice (Zhu et al. 2021, Section 5).

Three claims, so that the CPU evidence stands whatever the machine:

* ``fixed_etf_parameters`` -- counted from the code: the CIFAR-style ResNet18 of
  :mod:`nclab.nets.backbones` with d = 512 and with d = K = 10 (REFERENCE.md section 4:
  11,173,962 vs 8,859,862, -20.7 %), the K*d classifier weights a fixed ETF removes from training,
  and the training state (parameters, buffers, gradients, SGD momentum;
  :func:`nclab.nets.train.train_state_bytes`) after one SGD step of each network;
* ``fixed_etf_training`` -- an MLP trained on MNIST (and Fashion-MNIST at the quick and full
  scales) with a learned classifier (d = 512) and with a fixed simplex ETF and d = K
  (:func:`nclab.nets.reproduce.heads_configs`, :func:`nclab.nets.train.train`): test accuracies
  within a stated margin, training state and (fresh processes) peak RSS;
* ``fixed_etf_resnet18_gpu`` -- the papers' ResNet18 comparison with the measured peak GPU memory
  (``torch.cuda.max_memory_allocated``): full scale on a GPU only, else "not run" with the reason.
"""

from __future__ import annotations

import gc
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

from nclab.reproduce._zhu_common import PAPER, finite, save_json, seeds
from nclab.reproduce.claims import Claim, Context, Evidence, Table, check

#: REFERENCE.md section 4: CIFAR-style ResNet18, K = 10, 3 input channels, learned head with bias.
RESNET_PARAMS = {"d=512": 11_173_962, "d=K": 8_859_862}
K_CLASSES = 10
#: The training state of the d = K fixed-ETF network must be at least this fraction smaller.
STATE_REDUCTION = 0.20
#: Test-accuracy margin (percentage points) of the fixed ETF against the learned classifier.
MARGIN_PP = {"tiny": 5.0, "quick": 1.0, "full": 1.0}


def _resnet_state(head: str, feature_dim: int | None, seed: int) -> dict:
    """Parameter counts and training-state bytes of a ResNet18 (3 channels, K = 10) after one SGD step
    (gradients and momentum buffers allocated: the state a training step holds)."""
    import torch

    from nclab.nets.backbones import parameter_summary
    from nclab.nets.train import TrainConfig, build_model, make_optimizer, train_state_bytes

    cfg = TrainConfig(model="resnet18", head=head, feature_dim=feature_dim, seed=seed, device="cpu").validate()
    net = build_model(cfg, K_CLASSES, in_channels=3, image_size=32)
    opt = make_optimizer(net, cfg)
    for p in net.parameters():  # one SGD step allocates every gradient and momentum buffer; the values
        if p.requires_grad:     # do not matter for their size, so no forward pass is needed
            p.grad = torch.zeros_like(p)
    opt.step()
    return {**parameter_summary(net), "d": net.head.d, "train_state_bytes": train_state_bytes(net, opt)}


def _rss_probe(head: str, feature_dim: int | None, batch: int, steps: int, seed: int) -> dict:
    """Peak resident memory (MiB) of ``steps`` SGD steps of a ResNet18 (3 x 32 x 32 random inputs,
    batch ``batch``), meant to run in a fresh process: ``before`` after the imports and the batch,
    ``peak`` after the steps (``getrusage`` ru_maxrss)."""
    import resource
    import sys

    import torch

    from nclab.nets.train import TrainConfig, build_model, make_optimizer

    torch.set_num_threads(1)
    cfg = TrainConfig(model="resnet18", head=head, feature_dim=feature_dim, seed=seed, device="cpu").validate()
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, 3, 32, 32, generator=g)
    y = torch.arange(batch) % K_CLASSES
    unit = 2**20 if sys.platform == "darwin" else 2**10
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / unit
    net = build_model(cfg, K_CLASSES, in_channels=3, image_size=32)
    opt = make_optimizer(net, cfg)
    for _ in range(steps):
        opt.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(net(x), y).backward()
        opt.step()
    return {"before_mb": before, "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / unit}


def _peak_rss(ctx: Context, batch: int, steps: int) -> dict:
    """:func:`_rss_probe` of the learned d = 512 and the fixed-ETF d = K ResNet18, each in its own process."""
    ctx.say(f"  peak RSS of {steps} ResNet18 training step(s), batch {batch}, in fresh processes")
    out = {}
    with ProcessPoolExecutor(max_workers=2, mp_context=multiprocessing.get_context("spawn"),
                             max_tasks_per_child=1) as pool:
        futs = {name: pool.submit(_rss_probe, head, dim, batch, steps, ctx.seed)
                for name, head, dim in (("learned_d512", "learned", None), ("etf_dK", "etf", K_CLASSES))}
        for name, fut in futs.items():
            out[name] = fut.result()
    return out


def parameters(ctx: Context) -> Evidence:
    learned = _resnet_state("learned", None, ctx.seed)
    learned_k = _resnet_state("learned", K_CLASSES, ctx.seed)
    etf_k = _resnet_state("etf", K_CLASSES, ctx.seed)
    batch, steps = (64, 2) if ctx.scale != "full" else (128, 3)
    rss = _peak_rss(ctx, batch, steps) if ctx.scale != "tiny" else None  # reported, not judged (see criterion)
    rss_growth = None if rss is None else {k: v["peak_mb"] - v["before_mb"] for k, v in rss.items()}
    reduction = 1 - learned_k["total"] / learned["total"]
    state_reduction = 1 - etf_k["train_state_bytes"] / learned["train_state_bytes"]
    frozen = etf_k["total"] - etf_k["trainable"]
    passed = (learned["total"] == RESNET_PARAMS["d=512"] and learned_k["total"] == RESNET_PARAMS["d=K"]
              and round(100 * reduction, 1) == 20.7 and frozen == K_CLASSES * K_CLASSES
              and etf_k["fixed_classifier"] == K_CLASSES * K_CLASSES and state_reduction >= STATE_REDUCTION)
    rows = [["learned, d=512", learned["d"], learned["total"], learned["trainable"],
             round(learned["train_state_bytes"] / 2**20, 2)],
            ["learned, d=K", learned_k["d"], learned_k["total"], learned_k["trainable"],
             round(learned_k["train_state_bytes"] / 2**20, 2)],
            ["fixed ETF, d=K", etf_k["d"], etf_k["total"], etf_k["trainable"],
             round(etf_k["train_state_bytes"] / 2**20, 2)]]
    summary = (f"CIFAR-style ResNet18 (K=10, 3 channels) built from nclab.nets.backbones: {learned['total']:,} "
               f"parameters with d=512, {learned_k['total']:,} with d=K ({100 * reduction:.1f}% fewer); the fixed "
               f"ETF keeps {frozen} = K*d weights out of training ({etf_k['trainable']:,} trainable); training "
               f"state {learned['train_state_bytes'] / 2**20:.1f} MiB -> {etf_k['train_state_bytes'] / 2**20:.1f} "
               f"MiB ({100 * state_reduction:.1f}% less)")
    if rss is not None:
        summary += (f"; peak RSS of {steps} training steps at batch {batch} in a fresh process (reported, not judged) "
                    f"{rss['learned_d512']['peak_mb']:.0f} -> {rss['etf_dK']['peak_mb']:.0f} MiB (growth over the "
                    f"process before the network: {rss_growth['learned_d512']:.0f} -> {rss_growth['etf_dK']:.0f} MiB)")
    summary += "."
    numbers = {"parameter_reduction": reduction, "params_d512": learned["total"], "params_dK": learned_k["total"],
               "expected": RESNET_PARAMS, "etf_dK_total": etf_k["total"], "etf_dK_trainable": etf_k["trainable"],
               "etf_fixed_classifier": etf_k["fixed_classifier"], "frozen_parameters": frozen,
               "train_state_bytes_learned_d512": learned["train_state_bytes"],
               "train_state_bytes_learned_dK": learned_k["train_state_bytes"],
               "train_state_bytes_etf_dK": etf_k["train_state_bytes"], "train_state_reduction": state_reduction,
               "required_state_reduction": STATE_REDUCTION, "rss_batch": batch, "rss_steps": steps,
               "peak_rss_mb": None if rss is None else {k: v["peak_mb"] for k, v in rss.items()},
               "rss_growth_mb": rss_growth}
    table = Table("ResNet18 (CIFAR-style, K = 10)",
                  ["network", "d", "parameters", "trainable", "train state MiB"], rows)
    return Evidence(passed=passed, summary=summary, numbers=numbers, tables=[table])


def claim_parameters(ctx: Context) -> Claim:
    return check(
        ctx, "zhu2021.fixed_etf_parameters",
        title="d = K with a fixed ETF: 20.7% fewer ResNet18 parameters, smaller training state",
        source=f"{PAPER}, Section 5 (Table 1)",
        statement=("Setting the feature dimension to d = K and fixing the classifier as a simplex ETF reduces "
                   "the parameters of a ResNet18 by over 20% (11,173,962 -> 8,859,862 for K = 10) and removes "
                   "the K*d classifier weights from training, so training needs less memory."),
        criterion=(f"Counted from nclab's CIFAR-style ResNet18: exactly {RESNET_PARAMS['d=512']:,} and "
                   f"{RESNET_PARAMS['d=K']:,} parameters (20.7% fewer), K*d = 100 classifier weights frozen by the "
                   f"fixed ETF, and a training state (parameters, buffers, gradients, momentum after one SGD step) "
                   f"at least {100 * STATE_REDUCTION:.0f}% smaller than that of the learned d = 512 network. The peak "
                   "RSS of a few ResNet18 training steps (random 32 x 32 batches, each network in a fresh process; "
                   "quick and full scales) is reported, not judged: identical runs differ by up to ~50 MiB on "
                   "this CPU, about the size of the expected difference; peak GPU memory is judged in "
                   "zhu2021.fixed_etf_resnet18_gpu."),
        experiment=lambda: parameters(ctx),
    )


# ---------------------------------------------------------------------------------------------
# training on MNIST / Fashion-MNIST (CPU)
# ---------------------------------------------------------------------------------------------
def _setting(ctx: Context) -> dict:
    return ctx.pick(
        {"datasets": ["mnist"], "per_class": 50, "test_per_class": 100, "epochs": 3, "seeds": seeds(ctx, 1),
         "fresh_process": False},
        {"datasets": ["mnist", "fashion-mnist"], "per_class": 500, "test_per_class": None, "epochs": 12,
         "seeds": seeds(ctx, 1), "fresh_process": True},
        {"datasets": ["mnist", "fashion-mnist"], "per_class": None, "test_per_class": None, "epochs": 50,
         "seeds": seeds(ctx, 3), "fresh_process": True},
    )


def _configs(ctx: Context, s: dict, root: Path, model: str, full: bool, device: str, extra: dict) -> list:
    from nclab.nets.reproduce import HEAD_RUNS, heads_configs

    wanted = ("learned", "etf_d=K")
    jobs = []
    for dataset in s["datasets"]:
        for seed in s["seeds"]:
            overrides = dict(seed=seed, device=device, eval_schedule="log", eval_points=3, **extra)
            if model == "mlp":
                overrides.update(per_class=s["per_class"], test_per_class=s["test_per_class"], epochs=s["epochs"])
            if ctx.data_dir is not None:
                overrides["data_dir"] = str(ctx.data_dir)
            cfgs = heads_configs(dataset, full, root / f"{dataset}_seed{seed}", **overrides)
            for run, cfg in zip(HEAD_RUNS, cfgs):
                if run.name in wanted:
                    jobs.append((dataset, seed, run.name, cfg))
    return jobs


def _train_all(ctx: Context, jobs: list, fresh_process: bool) -> list[dict]:
    import torch

    from nclab.nets.train import train

    if not fresh_process:
        out = []
        for dataset, seed, name, cfg in jobs:
            ctx.say(f"  training {dataset} seed {seed} {name} ({cfg.epochs} epochs)")
            out.append(train(cfg))
            gc.collect()  # the finished run's model and data go before the next one's peak is measured
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        return out
    workers = max(1, min(len(jobs), os.cpu_count() or 1))
    for _, _, _, cfg in jobs:
        cfg.threads = cfg.threads or max(1, (os.cpu_count() or 1) // workers)
    ctx.say(f"  training {len(jobs)} runs, {workers} at a time, each in a fresh process")
    with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"),
                             max_tasks_per_child=1) as pool:
        futures = {pool.submit(train, cfg): i for i, (_, _, _, cfg) in enumerate(jobs)}
        out: list = [None] * len(jobs)
        for done, fut in enumerate(as_completed(futures), 1):
            i = futures[fut]
            out[i] = fut.result()
            dataset, seed, name, _ = jobs[i]
            ctx.say(f"  {done}/{len(jobs)} done: {dataset} seed {seed} {name}, test acc "
                    f"{_pct(out[i]['final'].get('test_acc'))}%, {out[i]['total_seconds']:.0f} s")
        return out


def _compare(ctx: Context, jobs: list, summaries: list[dict], margin: float, memory_key: str) -> tuple:
    runs = []
    for (dataset, seed, name, cfg), sm in zip(jobs, summaries):
        final = sm.get("final", {})
        runs.append({"dataset": dataset, "seed": seed, "run": name, "d": sm["feature_dim"],
                     "test_acc": finite(final.get("test_acc")), "train_acc": finite(final.get("train_acc")),
                     "nc1": finite(final.get("nc1")), "parameters_trainable": sm["parameters_trainable"],
                     "train_state_mb": sm["train_state_mb"], "peak_memory_mb": finite(sm.get("peak_memory_mb")),
                     "memory_kind": sm.get("memory_kind"), "seconds": sm["total_seconds"], "out": sm["out"],
                     "epochs": sm["epochs_done"]})
    pairs = []
    for dataset in sorted({r["dataset"] for r in runs}):
        for seed in sorted({r["seed"] for r in runs}):
            by = {r["run"]: r for r in runs if r["dataset"] == dataset and r["seed"] == seed}
            if "learned" not in by or "etf_d=K" not in by:
                continue
            a, b = by["learned"], by["etf_d=K"]
            diff = None if a["test_acc"] is None or b["test_acc"] is None else 100 * (b["test_acc"] - a["test_acc"])
            pairs.append({"dataset": dataset, "seed": seed, "learned_test_acc": a["test_acc"],
                          "etf_test_acc": b["test_acc"], "difference_pp": diff,
                          "within_margin": diff is not None and diff >= -margin,
                          "state_mb": [a["train_state_mb"], b["train_state_mb"]],
                          "state_smaller": b["train_state_mb"] < a["train_state_mb"],
                          memory_key: [a["peak_memory_mb"], b["peak_memory_mb"]],
                          "peak_smaller": (a["peak_memory_mb"] is not None and b["peak_memory_mb"] is not None
                                           and b["peak_memory_mb"] < a["peak_memory_mb"])})
    return runs, pairs


def _pp(v) -> str:
    return "n/a" if v is None else f"{v:+.2f} pp"


def _pct(v) -> str:
    return "n/a" if v is None else f"{100 * v:.2f}"


def _per(v) -> str:
    return "complete" if v is None else f"of {v} images per class"


def _mb(v) -> str:
    return "-" if v is None else f"{v:.0f}"


def training(ctx: Context) -> Evidence:
    s = _setting(ctx)
    margin = MARGIN_PP[ctx.scale]
    jobs = _configs(ctx, s, ctx.out / "heads", "mlp", False, "cpu", {})
    summaries = _train_all(ctx, jobs, s["fresh_process"])
    runs, pairs = _compare(ctx, jobs, summaries, margin, "peak_rss_mb")
    rss_judged = s["fresh_process"]  # measured in the runs' own processes; reported, not judged (see criterion)
    passed = bool(pairs) and all(p["within_margin"] and p["state_smaller"] for p in pairs)
    save_json(ctx, "fixed_etf_training.json", {"setting": s, "runs": runs, "pairs": pairs})
    rows = [[p["dataset"], p["seed"], _pct(p["learned_test_acc"]), _pct(p["etf_test_acc"]), _pp(p["difference_pp"]),
             f"{p['state_mb'][0]:.2f} / {p['state_mb'][1]:.2f}", " / ".join(_mb(v) for v in p["peak_rss_mb"])]
            for p in pairs]
    diffs = [p["difference_pp"] for p in pairs if p["difference_pp"] is not None]
    accs = ", ".join(f"{p['dataset']} seed {p['seed']}: {_pp(p['difference_pp'])}" for p in pairs)
    rss = "; ".join(" / ".join(_mb(v) for v in p["peak_rss_mb"]) for p in pairs)
    summary = (f"MLP (3 x 512, batch norm), {s['per_class'] or 'all'} training images per class, {s['epochs']} "
               f"epochs, seeds {s['seeds']}, test sets {_per(s['test_per_class'])}: fixed ETF with d = K minus "
               f"learned (d = 512) test accuracy {accs} (margin -{margin:g} pp); training state "
               + "; ".join(f"{p['state_mb'][0]:.2f} -> {p['state_mb'][1]:.2f} MiB" for p in pairs[:1])
               + (f"; peak RSS of the runs' own processes (MiB, learned / ETF): {rss}" if rss_judged
                  else "; peak RSS not judged at the tiny scale (the runs share this process)") + ".")
    numbers = {"min_difference_pp": min(diffs, default=None), "datasets": s["datasets"], "per_class": s["per_class"],
               "test_per_class": s["test_per_class"],
               "epochs": s["epochs"], "seeds": s["seeds"],
               "model": "mlp", "margin_pp": margin, "pairs": pairs,
               "peak_rss_judged": rss_judged, "results_file": "fixed_etf_training.json"}
    table = Table("Learned (d = 512) vs fixed ETF (d = K)", ["data", "seed", "learned %", "ETF d=K %", "diff pp",
                                                             "state MiB", "peak RSS MiB"], rows)
    return Evidence(passed=passed, summary=summary, numbers=numbers, tables=[table])


def claim_training(ctx: Context) -> Claim:
    margin = MARGIN_PP[ctx.scale]
    return check(
        ctx, "zhu2021.fixed_etf_training",
        title="A fixed ETF classifier with d = K trains as well as a learned one (CPU)",
        source=f"{PAPER}, Section 5 (Figures 5-6)",
        statement=("Fixing the last-layer classifier as a simplex ETF and setting d = K does not hurt "
                   "generalisation: test accuracy matches that of a learned classifier, with fewer trainable "
                   "parameters and less training memory."),
        criterion=(f"Per data set and seed, an MLP with the fixed ETF and d = K reaches a test accuracy no more "
                   f"than {margin:g} percentage points below the learned classifier with d = 512 (margin "
                   f"{margin:g} pp at the {ctx.scale} scale), with a smaller training state. The peak RSS of each "
                   "run's own process (quick and full scales) is reported, not judged: it is set by loading the "
                   "data set, the same for both heads (the model's memory is judged in "
                   "zhu2021.fixed_etf_parameters)."),
        experiment=lambda: training(ctx),
    )


# ---------------------------------------------------------------------------------------------
# ResNet18 on a GPU (full scale)
# ---------------------------------------------------------------------------------------------
def resnet_gpu(ctx: Context) -> Evidence:
    import torch

    if ctx.scale != "full" and not ctx.option("resnet_gpu"):
        return Evidence(passed=None, summary="Not run: ResNet18 training is the full scale (--full).",
                        reason="runs at the full scale only (--full)")
    if not (str(ctx.device).startswith("cuda") or ctx.device == "auto") or not torch.cuda.is_available():
        return Evidence(passed=None, summary="Not run: no GPU on this machine.", reason="no GPU")
    s = {"datasets": ["mnist"], "seeds": seeds(ctx, 1)}
    # test hooks: a short run (epochs, images per class) to check the plumbing on a GPU machine
    extra = {k: ctx.option(f"resnet_{k}") for k in ("epochs", "per_class", "test_per_class")
             if ctx.option(f"resnet_{k}") is not None}
    jobs = _configs(ctx, s, ctx.out / "resnet18", "resnet18", True, "cuda", extra)
    summaries = _train_all(ctx, jobs, False)
    runs, pairs = _compare(ctx, jobs, summaries, MARGIN_PP["full"], "peak_gpu_mb")
    passed = bool(pairs) and all(p["within_margin"] and p["peak_smaller"] for p in pairs)
    save_json(ctx, "fixed_etf_resnet18.json", {"runs": runs, "pairs": pairs})
    p = pairs[0]
    red = 1 - p["peak_gpu_mb"][1] / p["peak_gpu_mb"][0]
    summary = (f"ResNet18 on MNIST ({runs[0]['epochs']} epochs, {torch.cuda.get_device_name()}): test accuracy "
               f"learned {100 * p['learned_test_acc']:.2f}% vs fixed ETF d = K {100 * p['etf_test_acc']:.2f}% "
               f"({p['difference_pp']:+.2f} pp); peak GPU memory {p['peak_gpu_mb'][0]:.0f} -> "
               f"{p['peak_gpu_mb'][1]:.0f} MiB ({100 * abs(red):.1f}% {'less' if red >= 0 else 'more'}).")
    numbers = {"peak_gpu_reduction": red, "pairs": pairs, "margin_pp": MARGIN_PP["full"],
               "epochs": runs[0]["epochs"], "device": torch.cuda.get_device_name(),
               "results_file": "fixed_etf_resnet18.json"}
    return Evidence(passed=passed, summary=summary, numbers=numbers)


def claim_resnet_gpu(ctx: Context) -> Claim:
    return check(
        ctx, "zhu2021.fixed_etf_resnet18_gpu",
        title="ResNet18 with a fixed ETF and d = K: same accuracy, less GPU memory",
        source=f"{PAPER}, Section 5",
        statement=("Training a ResNet18 with d = K and a fixed simplex-ETF classifier loses no generalisation "
                   "and needs over 20% less memory."),
        criterion=(f"ResNet18 (the papers' recipe) on MNIST with a learned classifier (d = 512) and with a fixed "
                   f"ETF (d = K): test accuracy of the ETF no more than {MARGIN_PP['full']:g} pp below and "
                   "peak GPU memory (torch.cuda.max_memory_allocated) lower; full scale on a GPU only."),
        experiment=lambda: resnet_gpu(ctx),
    )
