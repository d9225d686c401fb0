"""`nclab train`, `nclab plot`, `nclab reproduce heads` from the command line, and bad input from
Python and from the CLI: a clear message, a non-zero exit, no traceback."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from nclab.cli import app
from nclab.nets.reproduce import heads_configs, markdown_table, reproduce_heads
from nclab.nets.config import TrainConfig
from nclab.nets.rundir import read_log
from nclab.nets.train import train

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
    with pytest.raises(ValueError, match="dataset must be one of 'mnist', 'fashion-mnist', 'cifar10', got 'svhn'"):
        train(TrainConfig(dataset="svhn", data_dir=str(data_dir), out=str(tmp_path / "x")))
    result = invoke("train", "--dataset", "svhn", "--data-dir", data_dir, "--out", tmp_path / "x", *TINY)
    assert_clean_failure(result, "dataset must be one of", "cifar10")
    assert not (tmp_path / "x").exists()


def test_cifar10_without_its_files_names_the_folder_and_the_download_option(data_dir, tmp_path):
    # ../shared/data holds MNIST and Fashion-MNIST only: CIFAR-10 is refused before any run folder exists
    result = invoke("train", "--dataset", "cifar10", "--data-dir", data_dir, "--out", tmp_path / "x", *TINY)
    assert_clean_failure(result, "cifar-10-batches-py", "--download")
    assert not (tmp_path / "x").exists()


def test_missing_data_directory(tmp_path):
    missing = tmp_path / "no-data"
    with pytest.raises(FileNotFoundError) as err:
        train(TrainConfig(model="mlp", data_dir=str(missing), out=str(tmp_path / "x")))
    msg = str(err.value)
    assert str(missing / "MNIST" / "raw") in msg and "download" in msg
    result = invoke("train", "--data-dir", missing, "--out", tmp_path / "x", *TINY)
    assert_clean_failure(result, "MNIST", "--download")


def test_etf_head_needs_d_at_least_K_minus_1(data_dir, tmp_path):
    with pytest.raises(ValueError, match=r"d >= K-1 = 9"):
        train(TrainConfig(model="mlp", head="etf", feature_dim=5, data_dir=str(data_dir), out=str(tmp_path / "x")))
    result = invoke("train", "--head", "etf", "--feature-dim", 5, "--data-dir", data_dir, "--out", tmp_path / "x", *TINY)
    assert_clean_failure(result, "K-1", "got d=5")


@pytest.mark.parametrize(
    "args, fragment",
    [(["--model", "vgg"], "model must be one of 'resnet18', 'mlp', got 'vgg'"), (["--epochs", "0"], "epochs must be >= 1, got 0"),
     (["--lr", "-1"], "lr must be > 0, got -1.0"), (["--eval-schedule", "often"], "one of 'every', 'log', got 'often'")],
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
    messages = []
    result = reproduce_heads("mnist", out=tmp_path, epochs=1, per_class=10, test_per_class=10,
                             data_dir=str(data_dir), fresh_process=False, on_message=messages.append)
    assert [m.split(":")[0] for m in messages] == ["learned", "etf", "etf_d=K", "normalized"]  # the plan
    assert [r["run"] for r in result["rows"]] == ["learned", "etf", "etf_d=K", "normalized"]
    table = json.loads((tmp_path / "heads.json").read_text())
    assert table["rows"] == result["rows"]
    etf_dk = table["rows"][2]
    assert etf_dk["d"] == 10 and etf_dk["parameters_total"] - etf_dk["parameters_trainable"] == 10 * 10
    learned = table["rows"][0]
    assert learned["d"] == 512 and learned["parameters_trainable"] > etf_dk["parameters_trainable"]
    assert all(r["train_acc"] is not None and r["nc1"] is not None for r in table["rows"])
    assert (tmp_path / "heads.md").read_text().count("\n|") >= 5
    assert result["runs"] == [str(tmp_path / r) for r in ("learned", "etf", "etf_d=K", "normalized")]
    from nclab.cli.plots import plot_runs  # the CLI draws the figure from what the library returns

    plot_runs(result["runs"], tmp_path / "heads.png", labels=result["labels"], title=result["title"])
    assert (tmp_path / "heads.png").stat().st_size > 10_000
    # a second call finds every run finished and only rewrites the table
    again = reproduce_heads("mnist", out=tmp_path, epochs=1, per_class=10, test_per_class=10, data_dir=str(data_dir))
    assert again["rows"] == result["rows"]


def test_reproduce_heads_cli_bad_dataset(tmp_path):
    assert_clean_failure(invoke("reproduce", "heads", "--dataset", "svhn", "--out", tmp_path), "unknown dataset 'svhn'")


def test_progress_bar_is_drawn_from_the_callbacks(data_dir, tmp_path):
    """The rich bar lives in the CLI and is fed by train's callbacks: one line per evaluated epoch,
    closed after the last epoch; a pickled copy (for a fresh process) starts without a bar."""
    import io
    import pickle

    from rich.console import Console

    from nclab.cli.nets import TrainProgress

    buf = io.StringIO()
    bar = TrainProgress(console=Console(file=buf, width=200))
    cfg = TrainConfig(model="mlp", per_class=20, test_per_class=10, epochs=2, batch_size=50, device="cpu",
                      data_dir=str(data_dir), out=str(tmp_path / "bar"))
    train(cfg, **bar.callbacks())
    out = buf.getvalue()
    lines = [line for line in out.splitlines() if line.startswith("epoch ") and line.split()[1].isdigit()]
    assert [line.split()[1] for line in lines] == ["1", "2"] and "nc1" in lines[-1]
    assert "ep 2/2" in out  # the bar of the last epoch
    assert bar._bar is None  # closed after the last epoch
    copy = pickle.loads(pickle.dumps(bar.on_epoch)).__self__
    assert isinstance(copy, TrainProgress) and copy._bar is None


def test_etf_head_with_d_equal_K_minus_1_is_refused_with_the_reason(data_dir, tmp_path):
    """d = K-1: the K frame vectors sum to zero in K-1 dimensions, so non-negative (ReLU) features
    leave classes unreachable; training used to run silently at 10% accuracy.  It is refused."""
    with pytest.raises(ValueError, match=r"d = K-1 = 9 cannot be trained on ReLU features"):
        TrainConfig(model="mlp", head="etf", feature_dim=9).validate()
    result = invoke("train", "--head", "etf", "--feature-dim", 9, "--data-dir", data_dir, "--out", tmp_path / "x", *TINY)
    assert_clean_failure(result, "unreachable", "--feature-dim 10")
    assert result.exit_code == 2 and not (tmp_path / "x").exists()
    TrainConfig(model="mlp", head="etf", feature_dim=10).validate()  # d = K trains (Zhu et al.)
