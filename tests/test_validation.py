"""nclab._validation: the one set of boundary checks (wording and accepted types)."""

from __future__ import annotations

import numpy as np
import pytest

from nclab._validation import check_bool, check_choice, check_int, check_real, check_seed


def test_accepts_and_normalises():
    assert check_int("K", np.int64(4), minimum=2) == 4 and type(check_int("K", np.int64(4))) is int
    assert check_real("tau", 5, positive=True) == 5.0 and type(check_real("x", np.float32(0.5))) is float
    assert check_real("lb", 0.0, nonnegative=True) == 0.0
    assert check_bool("bias", False) is False
    assert check_choice("solver", "lbfgs", ("lbfgs", "rtr")) == "lbfgs"
    assert check_seed(0) == 0


@pytest.mark.parametrize(
    "call,message",
    [
        (lambda: check_int("K", 1.5, minimum=2), "K must be an integer >= 2, got 1.5"),
        (lambda: check_int("K", True, minimum=2), "K must be an integer >= 2, got True"),
        (lambda: check_int("K", 1, minimum=2), "K must be >= 2, got 1"),
        (lambda: check_int("n", 7, maximum=5), "n must be <= 5, got 7"),
        (lambda: check_real("tau", 0.0, positive=True), "tau must be > 0, got 0.0"),
        (lambda: check_real("lb", -1, nonnegative=True), "lb must be >= 0, got -1.0"),
        (lambda: check_real("lw", float("nan")), "lw must be a finite number, got nan"),
        (lambda: check_real("lw", float("inf")), "lw must be a finite number, got inf"),
        (lambda: check_real("lw", "1e-3"), "lw must be a real number, got '1e-3'"),
        (lambda: check_real("c", 2.0, maximum=1.0), "c must be <= 1.0, got 2.0"),
        (lambda: check_bool("bias", 1), "bias must be True or False, got 1"),
        (lambda: check_choice("line_search", "exact", ("wolfe", "armijo")),
         "line_search must be one of 'wolfe', 'armijo', got 'exact'"),
        (lambda: check_seed(-1), "seed must be >= 0, got -1"),
    ],
)
def test_messages_name_the_argument_the_rule_and_the_value(call, message):
    with pytest.raises(ValueError) as err:
        call()
    assert str(err.value) == message


def test_array_checks_name_the_argument_and_the_problem():
    import torch

    from nclab._validation import check_features, check_head, check_labels, check_num_classes

    X = torch.zeros(4, 3)
    assert check_features(np.zeros((2, 3))).dtype == torch.float64
    assert check_labels(np.array([0, 1, 2, 1]), 4, 3).dtype == torch.int64
    assert check_num_classes(np.int64(3)) == 3
    W, b = check_head(torch.ones(3, 3), None, 3, 3, "cpu")
    assert W.dtype == b.dtype == torch.float64 and float(b.abs().sum()) == 0
    cases = [
        (lambda: check_num_classes(1), "num_classes must be an integer >= 2, got 1"),
        (lambda: check_features(X[0]), "features must be a 2-D array"),
        (lambda: check_features(X.long()), "features must have a floating-point dtype"),
        (lambda: check_features(X, dim=5), "features has dimension d = 3, but earlier data had d = 5"),
        (lambda: check_features(torch.full((2, 2), float("nan"))), "features contains NaN or inf values in 2 row"),
        (lambda: check_features("abc"), "features must be a numeric array, got dtype <U3"),
        (lambda: check_features({1: 2}), "features must be a torch.Tensor or a numpy array, got dict"),
        (lambda: check_labels(torch.tensor([0, 3]), 2, 3), "labels must be < num_classes = 3, got a label 3"),
        (lambda: check_labels(torch.tensor([0.0, 1.0]), 2, 3), "labels must be integers"),
        (lambda: check_head(torch.ones(2, 3), None, 3, 3, "cpu"), r"classifier must have shape \(K, d\) = \(3, 3\)"),
        (lambda: check_head(torch.ones(3, 3), torch.ones(2), 3, 3, "cpu"), "bias must have shape"),
    ]
    for call, message in cases:
        with pytest.raises(ValueError, match=message):
            call()
