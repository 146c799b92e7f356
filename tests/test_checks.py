"""tfcv._checks: the argument checks every module shares."""

from __future__ import annotations

import numpy as np
import pytest

from tfcv import _checks


def test_is_int_and_is_real_refuse_bools():
    assert all(_checks.is_int(v) for v in (3, -1, np.int64(3), np.uint8(0)))
    assert not any(_checks.is_int(v) for v in (True, np.True_, 3.0, "3", None))
    assert all(_checks.is_real(v) for v in (3, 2.5, np.float32(0.5), np.int64(2)))
    assert not any(_checks.is_real(v) for v in (False, np.False_, "2.5", None, [1.0]))


@pytest.mark.parametrize("call, error, message", [
    (lambda: _checks.positive_int("epochs", 0), ValueError,
     "Invalid value for argument `epochs`. Received: epochs=0. Expected an int >= 1."),
    (lambda: _checks.positive_int("epochs", "3"), ValueError,
     "Invalid value for argument `epochs`. Received: epochs='3'. Expected an int >= 1."),
    (lambda: _checks.positive_int("k", True, minimum=2), ValueError,
     "Invalid value for argument `k`. Received: k=True. Expected an int >= 2."),
    (lambda: _checks.non_negative_int("seed", -1, optional=True), ValueError,
     "Invalid value for argument `seed`. Received: seed=-1. Expected an int >= 0 or None."),
    (lambda: _checks.check_int("seed", None), TypeError,
     "Invalid value for argument `seed`. Received: seed=None. Expected an int."),
    (lambda: _checks.check_int("seed", 2.0, optional=True), TypeError,
     "Invalid value for argument `seed`. Received: seed=2.0. Expected an int or None."),
    (lambda: _checks.check_int("units", 0, minimum=1), ValueError,
     "Invalid value for argument `units`. Received: units=0. Expected an int >= 1."),
    (lambda: _checks.check_real("p", 1.5, low=0, high=1), ValueError,
     "Invalid value for argument `p`. Received: p=1.5. Expected a number >= 0 and <= 1."),
    (lambda: _checks.check_real("rate", 1.0, low=0, high=1, high_open=True), ValueError,
     "Invalid value for argument `rate`. Received: rate=1.0. Expected a number >= 0 and < 1."),
    (lambda: _checks.check_real("scale", 0.0, high=0, high_open=True), ValueError,
     "Invalid value for argument `scale`. Received: scale=0.0. Expected a number < 0."),
    (lambda: _checks.check_real("rescale", "1/255", optional=True), TypeError,
     "Invalid value for argument `rescale`. Received: rescale='1/255'. Expected a number or None."),
    (lambda: _checks.check_bool("shuffle", 1), TypeError,
     "Invalid value for argument `shuffle`. Received: shuffle=1. Expected a bool."),
    (lambda: _checks.check_choice("pooling", "sum", ("avg", "max", None)), ValueError,
     "Invalid value for argument `pooling`. Received: pooling='sum'. Expected one of 'avg', 'max', None."),
    (lambda: _checks.check_choice("channels", 2, (None, 1, 3), expected="1, 3 or None"), ValueError,
     "Invalid value for argument `channels`. Received: channels=2. Expected 1, 3 or None."),
])
def test_messages_name_the_argument_the_value_and_what_is_accepted(call, error, message):
    with pytest.raises(error) as caught:
        call()
    assert type(caught.value) is error and str(caught.value) == message


def test_accepted_values_come_back_as_builtins():
    assert _checks.positive_int("epochs", np.int64(3)) == 3 and type(_checks.positive_int("epochs", np.int64(3))) is int
    assert _checks.positive_int("seed", None, optional=True) is None
    assert type(_checks.check_int("seed", np.int32(-4))) is int
    assert _checks.check_real("p", np.float32(0.25), low=0, high=1) == 0.25
    assert type(_checks.check_real("p", 1, low=0, high=1)) is float
    assert _checks.check_real("p", None, optional=True) is None
    assert _checks.check_bool("shuffle", np.True_) is True
    assert _checks.check_choice("pooling", None, ("avg", None)) is None


def test_predicates_say_what_was_expected_in_python_or_yaml_words():
    with pytest.raises(_checks.Rejected) as caught:
        _checks.expect_int("x", optional=True, yaml=True)
    assert (caught.value.expected, caught.value.wrong_type) == ("an int or null", True)
    with pytest.raises(_checks.Rejected) as caught:
        _checks.expect_int(0, minimum=1)
    assert (caught.value.expected, caught.value.wrong_type) == ("an int >= 1", False)
    with pytest.raises(_checks.Rejected) as caught:
        _checks.expect_bool("yes", yaml=True)
    assert caught.value.expected == "true or false"
    with pytest.raises(_checks.Rejected) as caught:
        _checks.expect_choice("maxx", ("max", None), yaml=True)
    assert caught.value.expected == "one of 'max', null"


def test_invalid_argument_returns_the_error_for_the_caller_to_raise():
    error = _checks.invalid_argument("fold", 3, "an int in [0, 2]", TypeError)
    assert isinstance(error, TypeError)
    assert str(error) == "Invalid value for argument `fold`. Received: fold=3. Expected an int in [0, 2]."
