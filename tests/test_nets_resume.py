"""Resuming and extending a run of `nclab train`: damaged run folders are refused, the options
come back from config.json, --epochs extends a run.

Tiny runs (MLP, 30 MNIST images per class, batch 32, 1-5 epochs: seconds each).
Oracles: a snapshot of every file's bytes and mtime (a refusal changes nothing), an uninterrupted
run of the same length (and schedule) for the resumed or extended one, a marker file that a
pickled payload would create if it were ever run.
"""

from __future__ import annotations

import hashlib
import json
import shutil

import pytest
import torch
from typer.testing import CliRunner

from nclab.cli import app
from nclab.nets.config import TrainConfig, plan_resume
from nclab.nets.rundir import CHECKPOINT, CONFIG, LOG, SEAL, RunDir, read_log
from nclab.nets.train import train

runner = CliRunner()

#: Wall-clock and memory entries differ between two identical runs; everything else must not.
VOLATILE = {"epoch_seconds", "eval_seconds", "total_seconds", "peak_memory_mb"}

#: One torch thread in every run: float sums depend on the thread count, which torch keeps per process.
TINY = dict(model="mlp", per_class=30, test_per_class=20, batch_size=32, lr=0.05, device="cpu", threads=1)


@pytest.fixture(scope="module", autouse=True)
def _restore_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def tiny_args(data_dir, **kw) -> list[str]:
    opts = dict(TINY, data_dir=data_dir) | kw
    args = []
    for k, v in opts.items():
        args += [f"--{k.replace('_', '-')}", str(v)]
    return args


def tiny(data_dir, out, **kw) -> TrainConfig:
    return TrainConfig(**(dict(TINY, epochs=3, data_dir=str(data_dir), out=str(out)) | kw))


def invoke(*args):
    return runner.invoke(app, ["train", *[str(a) for a in args], "--no-progress"])


def numbers(run) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in VOLATILE} for r in read_log(run)]


def snapshot(folder) -> dict:
    return {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(folder.iterdir())}


def assert_refused(result, folder, before, *fragments):
    """Exit 2, one line `error: ...` naming the fragments, no traceback, every file unchanged."""
    assert result.exit_code == 2, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    text = result.output.strip()
    assert text.startswith("error:") and "\n" not in text and "Traceback" not in text, text
    for fragment in fragments:
        assert fragment in text, text
    assert snapshot(folder) == before


@pytest.fixture(scope="module")
def finished(data_dir, tmp_path_factory):
    """A finished 3-epoch run (milestones [1, 2]), written by the command line."""
    out = tmp_path_factory.mktemp("finished") / "run"
    result = invoke("--out", out, "--epochs", 3, *tiny_args(data_dir))
    assert result.exit_code == 0, result.output
    return out


@pytest.fixture
def run(finished, tmp_path):
    """A private copy of the finished run (copytree keeps mtimes)."""
    return shutil.copytree(finished, tmp_path / "run")


# -- damaged folders are refused, and nothing changes -----------------------------------------------


def _truncate(run):
    data = (run / CHECKPOINT).read_bytes()
    (run / CHECKPOINT).write_bytes(data[: len(data) // 2])


def _empty(run):
    (run / CHECKPOINT).write_bytes(b"")


def _flip(run):
    data = bytearray((run / CHECKPOINT).read_bytes())
    start = len(data) // 2
    for i in range(start, start + 200):
        data[i] ^= 0xFF
    (run / CHECKPOINT).write_bytes(bytes(data))


def _delete(run):
    (run / CHECKPOINT).unlink()


def _unseal(run):
    (run / SEAL).unlink()


def _future_format(run):
    seal = json.loads((run / SEAL).read_text())
    (run / SEAL).write_text(json.dumps(seal | {"format": 99}))


def _short_log(run):
    lines = (run / LOG).read_text().splitlines(keepends=True)
    (run / LOG).write_text("".join(lines[:2]))  # the checkpoint holds epoch 3


@pytest.mark.parametrize(
    "damage, fragments",
    [
        (_truncate, ["checkpoint.pt is truncated", "restore it"]),
        (_empty, ["checkpoint.pt is empty"]),
        (_flip, ["checkpoint.pt is corrupt", "SHA-256"]),
        (_delete, ["log.jsonl records 3 epochs but", "checkpoint.pt is missing"]),
        (_unseal, ["no seal checkpoint.json"]),
        (_future_format, ["format version 99", "reads version 1"]),
        (_short_log, ["log.jsonl records epochs 1..2", "holds epoch 3"]),
    ],
    ids=["truncated", "empty", "bit-flipped", "missing", "unsealed", "future-format", "log-behind"],
)
def test_damaged_run_is_refused_with_one_line_and_unchanged_files(data_dir, run, damage, fragments):
    damage(run)
    before = snapshot(run)
    assert_refused(invoke("--resume", run), run, before, *fragments)
    # the old way of resuming (every option typed again) is refused alike
    assert_refused(invoke("--out", run, "--resume", "--epochs", 3, *tiny_args(data_dir)), run, before, *fragments)


def test_resume_of_a_missing_folder_or_one_without_a_run_is_refused(tmp_path):
    result = invoke("--resume", tmp_path / "nope")
    assert result.exit_code == 2 and "does not exist" in result.output and "\n" not in result.output.strip()
    assert not (tmp_path / "nope").exists()
    (tmp_path / "empty").mkdir()
    assert_refused(invoke("--out", tmp_path / "empty", "--resume"), tmp_path / "empty", {}, "holds no training run")


def _open_marker(path):
    """A pickle payload that creates ``path`` when unpickled (``open(path, 'w')``)."""

    class Payload:
        def __reduce__(self):
            return (open, (str(path), "w"))

    return Payload()


def test_checkpoint_carrying_pickled_code_is_refused_and_never_run(run, tmp_path):
    # the payload works: loading it the old way (weights_only=False) runs it
    probe = tmp_path / "probe"
    torch.save({"x": _open_marker(probe)}, tmp_path / "probe.pt")
    torch.load(tmp_path / "probe.pt", weights_only=False)
    assert probe.exists()
    # a checkpoint with that payload and a seal that matches it (an attacker writes both)
    marker = tmp_path / "marker"
    torch.save({"format": 1, "epoch": 3, "model": _open_marker(marker)}, run / CHECKPOINT)
    data = (run / CHECKPOINT).read_bytes()
    seal = json.loads((run / SEAL).read_text())
    (run / SEAL).write_text(json.dumps(seal | {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}))
    before = snapshot(run)
    assert_refused(invoke("--resume", run), run, before, "cannot be loaded as weights only", "never run")
    assert not marker.exists()


def test_changed_options_are_refused_by_name(run):
    before = snapshot(run)
    assert_refused(invoke("--resume", run, "--lr", 0.5, "--batch-size", 16), run, before,
                   "lr: 0.05 in the run, 0.5 now", "batch_size: 32 in the run, 16 now")
    assert_refused(invoke("--resume", run, "--epochs", 2), run, before, "has done 3 epochs", "--epochs 3 or more")
    # explicit milestones that would change the learning rate of trained epochs
    assert_refused(invoke("--resume", run, "--epochs", 6, "--milestones", "2,4"), run, before, "milestones [2, 4]",
                   "keep [1, 2]")
    assert_refused(invoke(run, "--out", run.parent / "other", "--resume"), run, before, "two run directories")


# -- resuming with the run's own options, extending -------------------------------------------------


def test_resume_dir_alone_continues_like_an_uninterrupted_run(data_dir, tmp_path, finished):
    part = tmp_path / "part"
    result = invoke("--out", part, "--epochs", 3, "--stop-after", 1, *tiny_args(data_dir))
    assert result.exit_code == 0, result.output
    assert len(read_log(part)) == 1
    result = invoke("--resume", part)  # nothing else: config.json has the options (stop_after is not kept)
    assert result.exit_code == 0, result.output
    assert numbers(part) == numbers(finished)  # every loss, accuracy and metric, to the last bit
    # free options may differ; a finished run resumed at its length does nothing
    before = (part / LOG).read_bytes()
    result = invoke(part, "--resume", "--threads", 2, "--device", "cpu")
    assert result.exit_code == 0, result.output
    assert (part / LOG).read_bytes() == before


def test_crash_between_seal_and_checkpoint_resumes_from_the_previous_checkpoint(data_dir, tmp_path, finished):
    """The seal is written before the checkpoint: a crash in between leaves the previous checkpoint
    with a seal that still names it (as `previous`) and a log one epoch ahead; resuming repeats
    that epoch and ends like the uninterrupted run."""
    part = tmp_path / "part"
    train(tiny(data_dir, part, stop_after=1))
    first = (part / CHECKPOINT).read_bytes()
    train(tiny(data_dir, part, stop_after=2, resume=True))
    (part / CHECKPOINT).write_bytes(first)  # the seal says epoch 2, checkpoint.pt is still epoch 1
    assert json.loads((part / SEAL).read_text())["previous"]["epoch"] == 1
    assert RunDir(part).resume_state().epoch == 1
    assert invoke("--resume", part).exit_code == 0
    assert numbers(part) == numbers(finished)


def test_epochs_extends_a_finished_run_and_the_schedule_continues(data_dir, tmp_path, run):
    """3 -> 5 epochs: the 3-epoch run divided the rate after epochs 1 and 2; 5 epochs' own
    milestones (1 and 3) would change epoch 3's rate, so the run keeps [1, 2] (config.json
    says so) and equals the uninterrupted 5-epoch run with --milestones 1,2."""
    log_before = (run / LOG).read_bytes()
    result = invoke("--resume", run, "--epochs", 5)
    assert result.exit_code == 0, result.output
    assert (run / LOG).read_bytes().startswith(log_before)  # the past is kept byte for byte
    config = json.loads((run / CONFIG).read_text())
    assert config["epochs"] == 5 and config["milestones"] == [1, 2] and config["lr_milestones"] == [1, 2]
    oracle = tmp_path / "oracle"
    train(tiny(data_dir, oracle, epochs=5, milestones=[1, 2]))
    assert numbers(run) == numbers(oracle)
    assert [r["epoch"] for r in read_log(run)] == [1, 2, 3, 4, 5]
    assert json.loads((run / "summary.json").read_text())["finished"]


def test_epochs_extension_equals_the_longer_uninterrupted_run_when_the_past_allows(data_dir, tmp_path):
    """A 3-epoch run stopped after epoch 1 (milestones [1, 2]) extended to 4 epochs (milestones
    [1, 2] too, agreeing on epoch 1): the log is the uninterrupted 4-epoch run's."""
    part = tmp_path / "part"
    train(tiny(data_dir, part, stop_after=1))
    result = invoke("--resume", part, "--epochs", 4)
    assert result.exit_code == 0, result.output
    oracle = tmp_path / "oracle"
    train(tiny(data_dir, oracle, epochs=4))
    assert numbers(part) == numbers(oracle)
    config = json.loads((part / CONFIG).read_text())
    assert config["epochs"] == 4 and config["milestones"] is None and config["lr_milestones"] == [1, 2]


def test_plan_resume_rule():
    saved = TrainConfig(epochs=200).to_dict() | {"lr_milestones": [66, 133]}
    # milestones still ahead: the new length's are used (the uninterrupted longer run)
    assert plan_resume(TrainConfig(epochs=300), saved, "o", epochs_done=50).milestones is None
    # milestones passed: pinned, the schedule continues at the last rate
    assert plan_resume(TrainConfig(epochs=300), saved, "o", epochs_done=200).milestones == [66, 133]
    assert plan_resume(TrainConfig(epochs=300, milestones=[66, 133, 250]), saved, "o", 200).milestones == [66, 133, 250]
    with pytest.raises(ValueError, match=r"milestones \[100, 200\].*keep \[66, 133\]"):
        plan_resume(TrainConfig(epochs=300, milestones=[100, 200]), saved, "o", 200)
