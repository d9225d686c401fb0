"""`nclab metrics` / `nclab demo` end to end, and the feature-file reader's errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from nclab.cli import app
from nclab.io import load_feature_file, write_json_atomic
from nclab.metrics import METRIC_NAMES

from reference_nc import reference_metrics

runner = CliRunner()


def _data(K=4, n=30, d=6, seed=0):
    rng = np.random.default_rng(seed)
    means = rng.normal(size=(K, d))
    y = np.repeat(np.arange(K), n)
    X = (means[y] + 0.3 * rng.normal(size=(K * n, d)) + 1e3).astype(np.float32)
    W = rng.normal(size=(K, d))
    b = rng.normal(size=K)
    return X, y, W, b


def test_npz_to_json_has_exactly_the_reference_names(tmp_path):
    X, y, W, b = _data()
    np.savez(tmp_path / "f.npz", features=X, labels=y, classifier=W, bias=b)
    out = tmp_path / "m.json"
    r = runner.invoke(app, ["metrics", str(tmp_path / "f.npz"), "--json", str(out)])
    assert r.exit_code == 0, r.output
    got = json.loads(out.read_text())
    assert list(got) == list(METRIC_NAMES)
    ref = reference_metrics(X.astype(np.float64), y, 4, W, b)
    for k in METRIC_NAMES:
        assert got[k] == pytest.approx(ref[k], rel=1e-5, abs=1e-9), k
    assert "nc1" in r.output


def test_npz_without_classifier_gives_nulls(tmp_path):
    X, y, _, _ = _data()
    np.savez(tmp_path / "f.npz", features=X, labels=y)
    out = tmp_path / "m.json"
    assert runner.invoke(app, ["metrics", str(tmp_path / "f.npz"), "--json", str(out)]).exit_code == 0
    got = json.loads(out.read_text())
    assert got["nc4"] is None and got["nc3"] is None and got["nc2_etf_W"] is None
    assert got["nc1"] is not None


def test_memory_mapped_npy_pair_streams_in_batches(tmp_path):
    X, y, W, b = _data(K=5, n=41, d=7, seed=1)
    np.save(tmp_path / "X.npy", X)
    np.save(tmp_path / "y.npy", y)
    np.save(tmp_path / "W.npy", W)
    np.save(tmp_path / "b.npy", b)
    out = tmp_path / "m.json"
    r = runner.invoke(app, ["metrics", str(tmp_path / "X.npy"), "--labels", str(tmp_path / "y.npy"),
                            "--classifier", str(tmp_path / "W.npy"), "--bias", str(tmp_path / "b.npy"),
                            "--batch-size", "13", "--json", str(out)])
    assert r.exit_code == 0, r.output
    got = json.loads(out.read_text())
    ref = reference_metrics(X.astype(np.float64), y, 5, W, b)
    for k in METRIC_NAMES:
        assert got[k] == pytest.approx(ref[k], rel=1e-5, abs=1e-9), k


@pytest.mark.parametrize(
    "arrays,message",
    [
        (dict(features=np.zeros((4, 3), np.float32), labls=np.zeros(4, int)), "wrong keys"),
        (dict(features=np.zeros((4, 3), np.float32), labels=np.zeros(4, int), W=np.zeros((2, 3))), "unknown \\['W'\\]"),
        (dict(features=np.zeros(4, np.float32), labels=np.zeros(4, int)), "'features' must be 2-D"),
        (dict(features=np.zeros((4, 3), np.float32), labels=np.zeros(5, int)), "5 labels for 4 feature rows"),
        (dict(features=np.zeros((4, 3), np.float32), labels=np.zeros(4)), "'labels' must be integers"),
        (dict(features=np.zeros((4, 3), np.float32), labels=np.zeros(4, int), classifier=np.zeros((2, 4))),
         "'classifier' must be \\(K, d\\) with d = 3"),
    ],
)
def test_bad_files_give_a_clear_error(tmp_path, arrays, message):
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(ValueError, match=message):
        load_feature_file(tmp_path / "bad.npz")
    r = runner.invoke(app, ["metrics", str(tmp_path / "bad.npz")])
    assert r.exit_code == 2
    assert "Traceback" not in r.output


def test_bad_values_reach_the_user_as_one_line(tmp_path):
    X, y, _, _ = _data()
    X[3, 1] = np.nan
    np.savez(tmp_path / "nan.npz", features=X, labels=y)
    r = runner.invoke(app, ["metrics", str(tmp_path / "nan.npz")])
    assert r.exit_code == 2 and "NaN or inf" in r.output
    X, y, _, _ = _data()
    np.savez(tmp_path / "lab.npz", features=X, labels=y, classifier=np.ones((3, 6)))
    r = runner.invoke(app, ["metrics", str(tmp_path / "lab.npz")])
    assert r.exit_code == 2 and "< num_classes = 3" in r.output
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    r = runner.invoke(app, ["metrics", str(tmp_path / "junk.npz")])
    assert r.exit_code == 2 and "not a readable .npz" in r.output
    r = runner.invoke(app, ["metrics", str(tmp_path / "missing.npz")])
    assert r.exit_code == 2 and "does not exist" in r.output
    np.save(tmp_path / "X.npy", X)
    r = runner.invoke(app, ["metrics", str(tmp_path / "X.npy")])
    assert r.exit_code == 2 and "--labels" in r.output


def test_write_json_atomic_replaces_and_nulls_non_finite(tmp_path):
    p = tmp_path / "a" / "r.json"
    write_json_atomic(p, {"x": float("nan"), "y": np.float64(2.0), "z": [float("inf"), 1]})
    assert json.loads(p.read_text()) == {"x": None, "y": 2.0, "z": [None, 1]}
    assert [f.name for f in p.parent.iterdir()] == ["r.json"]


def test_demo_writes_table_json_and_figure(tmp_path):
    r = runner.invoke(app, ["demo", "--quick", "--out", str(tmp_path)])
    assert r.exit_code == 0, r.output
    data = json.loads((tmp_path / "metrics" / "metrics_demo.json").read_text())
    assert (tmp_path / "metrics" / "metrics_demo.png").stat().st_size > 10_000
    for row in data["results"]:  # nc1 follows the closed form of the planted model
        assert row["nc1"] == pytest.approx(row["nc1_closed_form"], rel=0.2)


def test_version_flag():
    import nclab

    res = runner.invoke(app, ["--version"])
    assert res.exit_code == 0 and res.output.strip() == f"nclab {nclab.__version__}"
