"""Terminal output at 80 columns: no line wider than the terminal, no number cut to "...",
summary numbers with a few significant digits, help texts complete, Ctrl-C in training says
how to resume."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
import typer
from rich.console import Console
from typer.testing import CliRunner

import nclab.cli.nets as nets_cli
from nclab.cli import app
from nclab.cli.nets import TrainProgress, heads_table, summary_line

runner = CliRunner()
WIDTH = 80


def assert_fits(text: str, width: int = WIDTH):
    for line in text.splitlines():
        assert len(line) <= width, f"{len(line)} > {width}: {line!r}"
    assert "…" not in text and "..." not in text, text


def _rows():
    rows = []
    for name, d, trainable in (("learned", 512, 11_173_962), ("etf", 512, 11_168_832),
                               ("etf_d=K", 10, 8_859_862), ("normalized", 512, 11_173_962)):
        rows.append(dict(run=name, head=name, d=d, train_acc=0.9993333333333333, test_acc=0.9726666666666667,
                         train_loss=0.0012345678, nc1=0.012345678, nc2_equinorm_means=0.0523456,
                         nc2_maxangle_means=0.0323456, nc3=0.23456789, nc4=0.000123456,
                         parameters_total=11_173_962, parameters_trainable=trainable, train_state_mb=85.2512,
                         peak_memory_mb=1234.5678, total_seconds=321.456))
    return rows


def test_heads_table_fits_80_columns_without_cutting_numbers():
    buf = io.StringIO()
    console = Console(file=buf, width=WIDTH)
    console.print(heads_table(_rows(), "Heads on mnist: mlp, 1000 per class, 100 epochs, lr 0.05, wd 0.0005, "
                                      "batch 128 [CPU default]", width=console.width))
    text = buf.getvalue()
    assert_fits(text)
    for number in ("0.9993", "0.9727", "1.2e-02", "2.3e-01", "1.2e-04", "11.2M", "8.86M", "1235", "321"):
        assert number in text, text
    assert "normalized" in text and "etf_d=K" in text


def test_heads_table_is_complete_when_wide():
    buf = io.StringIO()
    console = Console(file=buf, width=220)
    console.print(heads_table(_rows(), "t", width=console.width))
    text = buf.getvalue()
    assert "11,173,962" in text and "equinorm μ" in text and "…" not in text


def test_training_progress_fits_80_columns():
    buf = io.StringIO()
    bar = TrainProgress(console=Console(file=buf, width=WIDTH, force_terminal=True, color_system=None))
    for batch in range(1, 470):
        bar.on_batch(dict(epoch=124, epochs=200, batch=batch, batches=469, until=124))
    bar.on_epoch(dict(epoch=124, train_loss_running=0.01234, train_acc=0.9726666666666667,
                      test_acc=0.9713333333333334, nc1=0.0123456789))
    bar.close()
    # the live display rewrites its line with control codes; keep what a reader sees
    screen = [line.split("\r")[-1] for line in buf.getvalue().replace("\x1b[2K", "").splitlines()]
    text = "\n".join(line for line in ("".join(ch for ch in s if ch.isprintable()) for s in screen) if line)
    text = "\n".join(line for line in text.splitlines() if not line.startswith("[?25"))
    assert "ep 124/200" in text and "469/469" in text and "loss 0.0123" in text, text
    assert "epoch  124  loss 0.0123  train 0.9727  test 0.9713  nc1 1.235e-02" in text, text
    assert_fits(text.replace("[?25l", "").replace("[?25h", ""))


def test_summary_line_has_a_few_significant_digits():
    summary = {"epochs_done": 20, "total_seconds": 12.345,
               "final": {"train_acc": 0.9726666666666667, "test_acc": 0.96, "nc1": 0.000123456789}}
    line = summary_line(summary, "runs/a")
    assert line == "20 epochs in 12.3 s: train acc 0.9727, test acc 0.96, nc1 0.000123 -> runs/a"
    assert summary_line({"epochs_done": 0, "total_seconds": 0.0, "final": {}}, "x").count("–") == 3


def test_metrics_table_fits_80_columns(tmp_path):
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(4), 20)
    X = rng.normal(size=(80, 6)) + 5 * np.eye(6)[y]
    W = rng.normal(size=(4, 6))
    np.savez(tmp_path / "f.npz", features=X, labels=y, classifier=W)
    r = runner.invoke(app, ["metrics", str(tmp_path / "f.npz")], env={"COLUMNS": str(WIDTH)})
    assert r.exit_code == 0, r.output
    assert_fits(r.output)


def test_metrics_help_keeps_the_bracketed_text():
    r = runner.invoke(app, ["metrics", "--help"], env={"COLUMNS": "200"})
    assert r.exit_code == 0
    assert "(features, labels, [classifier, bias])" in r.output, r.output


def test_every_bench_option_has_help():
    command = typer.main.get_command(app).commands["bench"]
    options = [p for p in command.params if p.param_type_name == "option" and p.name != "help"]
    assert {p.name for p in options} >= {"n", "d", "k", "batch", "repeats", "json_out"}
    for p in options:
        assert p.help, f"--{p.name} has no help"
    r = runner.invoke(app, ["bench", "--help"], env={"COLUMNS": "200"})
    assert "feature dimension" in r.output and "number of classes" in r.output


def test_ctrl_c_during_training_says_how_to_resume(monkeypatch, tmp_path):
    out = tmp_path / "run"

    def interrupted(config, **callbacks):
        out.mkdir(parents=True, exist_ok=True)
        (out / "log.jsonl").write_text(json.dumps({"epoch": 3, "train_loss_running": 0.5}) + "\n")
        raise KeyboardInterrupt

    monkeypatch.setattr(nets_cli, "train", interrupted)
    r = runner.invoke(app, ["train", "--out", str(out), "--no-progress"])
    assert r.exit_code == 130, r.output
    assert "Traceback" not in r.output and "Aborted" not in r.output
    assert f"interrupted after epoch 3; resume with: nclab train --out {out} --resume" in r.output, r.output


def test_ctrl_c_before_the_first_epoch(monkeypatch, tmp_path):
    def interrupted(config, **callbacks):
        raise KeyboardInterrupt

    monkeypatch.setattr(nets_cli, "train", interrupted)
    out = tmp_path / "fresh"
    r = runner.invoke(app, ["train", "--out", str(out), "--no-progress"])
    assert r.exit_code == 130
    assert f"interrupted; resume with: nclab train --out {out} --resume" in r.output, r.output
