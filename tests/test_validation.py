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
