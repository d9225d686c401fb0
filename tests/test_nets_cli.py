"""`nclab train`, `nclab plot`, `nclab reproduce heads` from the command line, and bad input from
Python and from the CLI: a clear message, a non-zero exit, no traceback."""

from __future__ import annotations

import io
import json

import pytest
from rich.console import Console
from typer.testing import CliRunner

from nclab.cli import app
from nclab.nets.reproduce import heads_configs, markdown_table, reproduce_heads
from nclab.nets.train import TrainConfig, read_log, train

runner = CliRunner()

TINY = ["--model", "mlp", "--per-class", "20", "--test-per-class", "10", "--epochs", "2", "--batch-size", "50",
        "--device", "cpu", "--no-progress"]


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def assert_clean_failure(result, *fragments):
    assert result.exit_code != 0
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    for fragment in fragments:
        assert fragment in result.output, result.output


# -- bad input ----------------------------------------------------------------------------------


def test_unknown_dataset(data_dir, tmp_path):
    with pytest.raises(ValueError, match="unknown dataset 'cifar10'; allowed: mnist, fashion-mnist"):
        train(TrainConfig(dataset="cifar10", data_dir=str(data_dir), out=str(tmp_path / "x")), progress=False)
    result = invoke("train", "--dataset", "cifar10", "--data-dir", data_dir, "--out", tmp_path / "x", *TINY)
    assert_clean_failure(result, "unknown dataset", "fashion-mnist")
    assert not (tmp_path / "x").exists()


def test_missing_data_directory(tmp_path):
    missing = tmp_path / "no-data"
    with pytest.raises(FileNotFoundError) as err:
        train(TrainConfig(model="mlp", data_dir=str(missing), out=str(tmp_path / "x")), progress=False)
    msg = str(err.value)
    assert str(missing / "MNIST" / "raw") in msg and "download" in msg
    result = invoke("train", "--data-dir", missing, "--out", tmp_path / "x", *TINY)
    assert_clean_failure(result, "MNIST", "--download")


def test_etf_head_needs_d_at_least_K_minus_1(data_dir, tmp_path):
    with pytest.raises(ValueError, match=r"d >= K-1 = 9"):
        train(TrainConfig(model="mlp", head="etf", feature_dim=5, data_dir=str(data_dir), out=str(tmp_path / "x")),
              progress=False)
    result = invoke("train", "--head", "etf", "--feature-dim", 5, "--data-dir", data_dir, "--out", tmp_path / "x", *TINY)
    assert_clean_failure(result, "K-1", "got d=5")


@pytest.mark.parametrize(
    "args, fragment",
    [(["--model", "vgg"], "unknown model 'vgg'"), (["--epochs", "0"], "epochs must be an integer >= 1"),
     (["--lr", "-1"], "lr must be a finite number > 0"), (["--eval-schedule", "often"], "allowed: every, log")],
)
def test_other_bad_options(data_dir, tmp_path, args, fragment):
    result = invoke("train", "--data-dir", data_dir, "--out", tmp_path / "x", *TINY, *args)
    assert_clean_failure(result, fragment)


def test_plot_of_a_missing_run(tmp_path):
    assert_clean_failure(invoke("plot", tmp_path / "nothing", "--out", tmp_path / "f.png"), "no training log")


# -- the commands -------------------------------------------------------------------------------


def test_train_two_runs_then_plot(data_dir, tmp_path):
    for head in ("learned", "etf"):
        result = invoke("train", "--head", head, "--data-dir", data_dir, "--out", tmp_path / head, *TINY)
        assert result.exit_code == 0, result.output
        assert len(read_log(tmp_path / head)) == 2
    # resuming a finished run does nothing and succeeds
    result = invoke("train", "--head", "etf", "--data-dir", data_dir, "--out", tmp_path / "etf", "--resume", *TINY)
    assert result.exit_code == 0, result.output
    assert len(read_log(tmp_path / "etf")) == 2
    fig = tmp_path / "fig" / "collapse.png"
    result = invoke("plot", tmp_path / "learned", tmp_path / "etf", "--out", fig)
    assert result.exit_code == 0, result.output
    assert fig.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and fig.stat().st_size > 10_000


def test_reproduce_heads_plan():
    cpu = heads_configs("mnist", full=False, out="o")
    assert [(c.head, c.feature_dim, c.etf_rotation) for c in cpu] == [
        ("learned", None, False), ("etf", None, True), ("etf", 10, False), ("normalized", None, False)]
    assert all(c.model == "mlp" and c.device == "cpu" and c.resume for c in cpu)
    full = heads_configs("fashion-mnist", full=True, out="o", epochs=7)
    assert all(c.model == "resnet18" and c.per_class is None and c.epochs == 7 for c in full)
    assert "| run |" in markdown_table([{"run": "a", "d": 10, "nc1": 0.5}])


def test_reproduce_heads_tiny(data_dir, tmp_path):
    # in this process (fresh_process=False) to save four interpreter starts; the CLI is the same call
    result = reproduce_heads("mnist", out=tmp_path, epochs=1, per_class=10, test_per_class=10,
                             data_dir=str(data_dir), progress=False, fresh_process=False,
                             console=Console(file=io.StringIO(), width=200))
    assert [r["run"] for r in result["rows"]] == ["learned", "etf", "etf_d=K", "normalized"]
    table = json.loads((tmp_path / "heads.json").read_text())
    assert table["rows"] == result["rows"]
    etf_dk = table["rows"][2]
    assert etf_dk["d"] == 10 and etf_dk["parameters_total"] - etf_dk["parameters_trainable"] == 10 * 10
    learned = table["rows"][0]
    assert learned["d"] == 512 and learned["parameters_trainable"] > etf_dk["parameters_trainable"]
    assert all(r["train_acc"] is not None and r["nc1"] is not None for r in table["rows"])
    assert (tmp_path / "heads.md").read_text().count("\n|") >= 5
    assert (tmp_path / "heads.png").stat().st_size > 10_000
    # a second call finds every run finished and only rewrites the table
    again = reproduce_heads("mnist", out=tmp_path, epochs=1, per_class=10, test_per_class=10, data_dir=str(data_dir),
                            progress=False, console=Console(file=io.StringIO()))
    assert again["rows"] == result["rows"]


def test_reproduce_heads_cli_bad_dataset(tmp_path):
    assert_clean_failure(invoke("reproduce", "heads", "--dataset", "svhn", "--out", tmp_path), "unknown dataset 'svhn'")
