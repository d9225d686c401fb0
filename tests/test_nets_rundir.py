"""nclab.nets.rundir: the files of a run directory.

Oracles: the records and states that were written (read back equal), the RNG streams drawn after
saving (drawn again equal after restoring), a directory listing (no temporary file left).
"""

from __future__ import annotations

import os
import random
import stat

import numpy as np
import pytest
import torch

from nclab.nets.rundir import CHECKPOINT, CONFIG, LOG, SEAL, SUMMARY, RunDir, read_log


def _draws():
    return torch.rand(3), np.random.rand(3), random.random()


def test_fresh_directory_config_log_summary(tmp_path):
    run = RunDir(tmp_path / "run")
    assert not run.holds_run()
    run.start({"lr": 0.05, "num_classes": 10})
    assert run.holds_run() and run.has_log() and not run.has_checkpoint()
    assert run.read_config() == {"lr": 0.05, "num_classes": 10}
    assert read_log(run.path) == []
    run.append_log({"epoch": 1, "nc1": float("nan"), "train_loss": 0.5})
    run.append_log({"epoch": 2, "nc1": 0.25, "train_loss": float("inf")})
    assert run.read_log() == [{"epoch": 1, "nc1": None, "train_loss": 0.5}, {"epoch": 2, "nc1": 0.25, "train_loss": None}]
    run.write_summary({"final": {"epoch": 2}})
    assert sorted(os.listdir(run.path)) == sorted([CONFIG, LOG, SUMMARY])
    assert stat.S_IMODE((run.path / CONFIG).stat().st_mode) == 0o666 & ~_umask()  # readable by collaborators


def test_trim_log_drops_epochs_after_the_checkpoint(tmp_path):
    run = RunDir(tmp_path)
    run.start({})
    for e in (1, 2, 3):
        run.append_log({"epoch": e})
    run.trim_log(2)
    assert [r["epoch"] for r in run.read_log()] == [1, 2]
    assert sorted(os.listdir(tmp_path)) == [CONFIG, LOG]


def test_checkpoint_round_trip_restores_weights_optimizer_scheduler_and_rngs(tmp_path):
    torch.manual_seed(0)
    net = torch.nn.Linear(4, 3)
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, [1], gamma=0.1)
    net(torch.randn(5, 4)).sum().backward()
    opt.step()
    sched.step()
    run = RunDir(tmp_path)
    run.save_checkpoint(net, opt, sched, epoch=4, total_seconds=1.5, config={"seed": 0})
    after_save = _draws()
    assert sorted(os.listdir(tmp_path)) == [SEAL, CHECKPOINT]  # written atomically: no temporary file left
    weights = {k: v.clone() for k, v in net.state_dict().items()}

    net2 = torch.nn.Linear(4, 3)
    opt2 = torch.optim.SGD(net2.parameters(), lr=0.1, momentum=0.9)
    sched2 = torch.optim.lr_scheduler.MultiStepLR(opt2, [1], gamma=0.1)
    assert run.load_checkpoint(net2, opt2, sched2) == (4, 1.5)
    for k, v in net2.state_dict().items():
        assert torch.equal(v, weights[k])
    assert torch.equal(opt2.state_dict()["state"][0]["momentum_buffer"], opt.state_dict()["state"][0]["momentum_buffer"])
    assert sched2.state_dict() == sched.state_dict() and opt2.param_groups[0]["lr"] == pytest.approx(0.01)
    again = _draws()  # the RNGs continue exactly where they were when the checkpoint was saved
    assert torch.equal(again[0], after_save[0]) and np.array_equal(again[1], after_save[1]) and again[2] == after_save[2]


def test_missing_log_is_explained(tmp_path):
    with pytest.raises(FileNotFoundError, match="no training log at .*written by `nclab train`"):
        read_log(tmp_path)


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current


def _linear_state():
    net = torch.nn.Linear(4, 3)
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    return net, opt, torch.optim.lr_scheduler.MultiStepLR(opt, [1], gamma=0.1)


def test_checkpoint_is_weights_only_and_sealed_with_its_predecessor(tmp_path):
    import hashlib
    import json

    run = RunDir(tmp_path)
    run.start({"seed": 0})
    net, opt, sched = _linear_state()
    run.save_checkpoint(net, opt, sched, epoch=1, total_seconds=1.0, config={"seed": 0})
    first = (tmp_path / CHECKPOINT).read_bytes()
    run.save_checkpoint(net, opt, sched, epoch=2, total_seconds=2.0, config={"seed": 0})
    data = (tmp_path / CHECKPOINT).read_bytes()
    seal = json.loads((tmp_path / SEAL).read_text())
    assert seal["format"] == 1 and seal["epoch"] == 2 and seal["bytes"] == len(data)
    assert seal["sha256"] == hashlib.sha256(data).hexdigest()
    assert seal["previous"] == {"epoch": 1, "bytes": len(first), "sha256": hashlib.sha256(first).hexdigest()}
    state = torch.load(tmp_path / CHECKPOINT, weights_only=True)  # no pickled object anywhere
    assert state["format"] == 1 and state["epoch"] == 2 and state["scheduler"]["milestones"] == [1]


def test_resume_state_checks_the_log_against_the_checkpoint(tmp_path):
    run = RunDir(tmp_path)
    run.start({"seed": 0})
    net, opt, sched = _linear_state()
    for e in (1, 2):
        run.append_log({"epoch": e})
    run.save_checkpoint(net, opt, sched, epoch=2, total_seconds=1.0, config={})
    assert run.resume_state().epoch == 2
    run.append_log({"epoch": 3})  # a crash after the log line, before the checkpoint: accepted, trimmed later
    with open(tmp_path / LOG, "a") as f:
        f.write('{"epoch": 4, "lo')  # an append cut short: ignored
    resumed = run.resume_state()
    assert resumed.epoch == 2 and [r["epoch"] for r in resumed.log] == [1, 2]
    run.trim_log(2)
    assert [r["epoch"] for r in run.read_log()] == [1, 2]
    run.append_log({"epoch": 3})
    run.append_log({"epoch": 4})  # two epochs ahead: not a crash of one save
    with pytest.raises(ValueError, match="records epochs 1..4 .* holds epoch 2"):
        run.resume_state()
