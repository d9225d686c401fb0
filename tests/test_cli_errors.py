"""The command line's one error boundary: bad values and files end as one ``error:`` line that
names the file or the option, exit status 2, never a traceback; a damaged run log costs `nclab
plot` only its bad lines; an empty class caused by a label out of range says so."""

from __future__ import annotations

import json

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from nclab.cli import app
from nclab.cli.console import describe_error, error_boundary, guard_commands
from nclab.metrics import EmptyClassesError, compute_metrics

runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def assert_one_error_line(result, *fragments):
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.output
    for fragment in fragments:
        assert fragment in errors[0], errors[0]
    return errors[0]


@pytest.fixture
def features(tmp_path):
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(3), 10)
    X = rng.normal(size=(30, 4)) + 3 * np.eye(4)[y]
    path = tmp_path / "f.npz"
    np.savez(path, features=X, labels=y)
    return path


# -- files --------------------------------------------------------------------------------------


def test_metrics_json_into_a_folder_is_refused_before_the_work(features, tmp_path):
    folder = tmp_path / "results"
    folder.mkdir()
    r = invoke("metrics", features, "--json", folder)
    line = assert_one_error_line(r, "--json", str(folder), "is a folder")
    assert "nc1" not in r.output  # refused before the table, not after it
    assert line


def test_an_os_error_inside_a_command_is_one_line_naming_the_file(features, tmp_path):
    """The parent of --json is a file: NotADirectoryError from the writer, caught by the boundary."""
    blocker = tmp_path / "plain.txt"
    blocker.write_text("x")
    r = invoke("metrics", features, "--json", blocker / "m.json")
    assert_one_error_line(r, str(blocker))


def test_a_missing_feature_file_names_it(tmp_path):
    r = invoke("metrics", tmp_path / "absent.npz")
    assert_one_error_line(r, "absent.npz")


def test_describe_error_of_the_os_families():
    assert describe_error(IsADirectoryError(21, "Is a directory", "out")) == "out: is a directory"
    assert describe_error(PermissionError(13, "Permission denied", "/x/y.json")) == "/x/y.json: permission denied"
    assert describe_error(FileNotFoundError(2, "No such file or directory", "a.npy")) == \
        "a.npy: no such file or directory"
    assert describe_error(NotADirectoryError(20, "Not a directory", "f/x")) == "f/x: not a directory"
    try:
        json.loads('{"a": }')
    except json.JSONDecodeError as err:
        assert describe_error(err) == "not valid JSON (Expecting value at line 1 column 7)"
    assert describe_error(ValueError("two\n lines")) == "two lines"


def test_the_boundary_lets_unexpected_exceptions_through():
    """A bug keeps its traceback: only ValueError and OSError become one line."""
    probe = typer.Typer()

    @probe.command()
    def boom(kind: str) -> None:
        raise {"bug": RuntimeError, "value": ValueError, "perm": PermissionError}[kind]("[brackets] stay")

    @probe.command()
    def other() -> None:
        pass

    guard_commands(probe)
    r = runner.invoke(probe, ["boom", "bug"])
    assert isinstance(r.exception, RuntimeError)
    r = runner.invoke(probe, ["boom", "value"])
    assert r.exit_code == 2 and "error: [brackets] stay" in r.output and "Traceback" not in r.output
    r = runner.invoke(probe, ["boom", "perm"])
    assert r.exit_code == 2 and "error: [brackets] stay" in r.output


def test_the_boundary_keeps_the_signature_typer_reads():
    def command(x: int = 1) -> int:
        return x

    import inspect

    assert inspect.signature(error_boundary(command)) == inspect.signature(command)


# -- run folders: nclab plot --------------------------------------------------------------------


def _run(folder, lines, config='{"head": "etf", "feature_dim": 10}'):
    folder.mkdir(parents=True)
    (folder / "log.jsonl").write_text("\n".join(lines) + "\n")
    if config is not None:
        (folder / "config.json").write_text(config)
    return folder


def _record(epoch):
    return json.dumps({"epoch": epoch, "train_loss_running": 1.0 / epoch, "train_acc": 0.5 + 0.1 * epoch,
                       "train_loss": 1.0 / epoch, "nc1": 1.0 / epoch ** 2, "nc3": 0.1 / epoch})


def test_plot_skips_only_the_bad_line_and_names_the_file_and_line(tmp_path):
    run = _run(tmp_path / "run", [_record(1), '{"epoch": 2, "nc1": ', _record(3)])
    r = invoke("plot", run, "--out", tmp_path / "c.png")
    assert r.exit_code == 0, r.output
    assert "Traceback" not in r.output
    warnings = [line for line in r.output.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and f"{run / 'log.jsonl'} line 2" in warnings[0], r.output
    assert (tmp_path / "c.png").is_file()


def test_plot_names_a_corrupt_config_and_still_draws(tmp_path):
    run = _run(tmp_path / "run", [_record(1), _record(2)], config='{"head": "etf", "feature_dim": ')
    r = invoke("plot", run, "--out", tmp_path / "c.png")
    assert r.exit_code == 0, r.output
    assert f"{run / 'config.json'}: not valid JSON" in r.output
    assert (tmp_path / "c.png").is_file()


def test_plot_of_a_log_with_no_good_line_is_one_error(tmp_path):
    run = _run(tmp_path / "run", ["not json", "{"])
    r = invoke("plot", run, "--out", tmp_path / "c.png")
    assert_one_error_line(r, "no evaluated epoch", str(run))


# -- labels and empty classes -------------------------------------------------------------------


def _labels_to_99(tmp_path):
    rng = np.random.default_rng(1)
    y = np.r_[np.repeat(np.arange(5), 10), [99, 99]]
    X = rng.normal(size=(y.size, 4))
    path = tmp_path / "f99.npz"
    np.savez(path, features=X, labels=y)
    return path, X, y


def test_a_label_out_of_range_is_named_as_the_likely_cause_with_cli_options(tmp_path):
    path, _, _ = _labels_to_99(tmp_path)
    r = invoke("metrics", path)
    line = assert_one_error_line(r, "labels go up to 99 but only 6 classes have samples", "out of range",
                                 "--num-classes", "--empty drop")
    assert "empty=" not in line and "94 class(es)" not in line


def test_the_same_in_python_names_the_arguments(tmp_path):
    _, X, y = _labels_to_99(tmp_path)
    with pytest.raises(EmptyClassesError, match='labels go up to 99') as info:
        compute_metrics(X, y)
    assert 'empty="drop"' in str(info.value) and "num_classes=" in str(info.value)
    assert "--" not in str(info.value)
    assert isinstance(info.value, ValueError)


def test_a_genuinely_empty_class_is_listed_with_the_cli_option(tmp_path):
    y = np.repeat([0, 1, 3], 10)
    X = np.random.default_rng(2).normal(size=(30, 4))
    path = tmp_path / "gap.npz"
    np.savez(path, features=X, labels=y)
    assert_one_error_line(invoke("metrics", path), "1 class(es) have no sample: [2]", "--empty drop")
    r = invoke("metrics", path, "--empty", "drop")
    assert r.exit_code == 0, r.output
