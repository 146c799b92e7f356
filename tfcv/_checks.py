"""Argument checks: the one place that says what an acceptable int, number,
bool or choice is, and how tfcv words the error when it is not.

Every check names the argument, the value received and what is accepted,
as Keras does:

    ValueError: Invalid value for argument `epochs`. Received: epochs=0. Expected an int >= 1.

A value of the wrong type is a `TypeError` (`check_int`, `check_real`,
`check_bool`), one of the right type but out of range a `ValueError`. A
count (`positive_int`) is the exception: anything that is not an int in
range is a `ValueError`, as `fit(epochs=...)`, `tfds_folds(k=...)` and
`Randomized(samples=...)` have always raised.

The checks come in two layers so that the model spec, which reports a key
path such as `backbone.blocks[2].pooling` instead of an argument name, can
reuse the rules with its own wording: the `expect_*` predicates return the
accepted value or raise `Rejected` with what was expected, and the `check_*`
functions turn that into an argument error.
"""

from __future__ import annotations

import numbers
from collections.abc import Collection
from typing import Any

import numpy as np


def is_int(value: Any) -> bool:
    """True for Python and NumPy integers, but not for bools."""
    return isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_))


def is_real(value: Any) -> bool:
    """True for Python and NumPy real numbers (ints included), but not for bools."""
    return isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))


class Rejected(Exception):
    """What an `expect_*` predicate raises for a value it does not accept.

    Attributes:
        expected: What is accepted, to follow "Expected ", such as
            `"an int >= 1"`.
        wrong_type: `True` when the value has the wrong type (a
            `TypeError`), `False` when it is out of range (a `ValueError`).
    """

    def __init__(self, expected: str, *, wrong_type: bool = False):
        super().__init__(expected)
        self.expected = expected
        self.wrong_type = wrong_type


def _none(yaml: bool) -> str:
    return "null" if yaml else "None"


def expect_int(value: Any, *, minimum: int | None = None, optional: bool = False, yaml: bool = False) -> int | None:
    """`value` as an `int` (or `None` if `optional`), else `Rejected`.

    `yaml=True` spells `None` as `null` in the message, for spec files.
    """
    if value is None and optional:
        return None
    if not is_int(value):
        raise Rejected("an int" + (f" or {_none(yaml)}" if optional else ""), wrong_type=True)
    if minimum is not None and value < minimum:
        raise Rejected(f"an int >= {minimum}")
    return int(value)


def expect_real(
    value: Any,
    *,
    low: float | None = None,
    high: float | None = None,
    high_open: bool = False,
    optional: bool = False,
    yaml: bool = False,
) -> float | None:
    """`value` as a `float` in `[low, high]` (`[low, high)` with
    `high_open`), or `None` if `optional`; else `Rejected`."""
    if value is None and optional:
        return None
    if not is_real(value):
        raise Rejected("a number" + (f" or {_none(yaml)}" if optional else ""), wrong_type=True)
    value = float(value)
    too_low = low is not None and value < low
    too_high = high is not None and (value >= high if high_open else value > high)
    if too_low or too_high:
        bounds = ([] if low is None else [f">= {low}"]) + ([] if high is None else [f"{'<' if high_open else '<='} {high}"])
        raise Rejected("a number " + " and ".join(bounds))
    return value


def expect_bool(value: Any, *, yaml: bool = False) -> bool:
    """`value` as a `bool` (NumPy bools too), else `Rejected`."""
    if not isinstance(value, (bool, np.bool_)):
        raise Rejected("true or false" if yaml else "a bool", wrong_type=True)
    return bool(value)


def expect_choice(value: Any, choices: Collection[Any], *, yaml: bool = False) -> Any:
    """`value` if it is one of `choices`, else `Rejected`."""
    if value not in choices:
        listed = ", ".join(_none(yaml) if c is None else repr(c) for c in choices)
        raise Rejected(f"one of {listed}")
    return value


def decode_utf8(content: bytes, where: str, *, encoding: str = "utf-8", hint: str = "") -> str:
    """The text of a file's `content`, or a `ValueError` naming `where`
    (such as `"CSV file 'a.csv'"`), the first byte that is not UTF-8 and
    its line, then `hint`."""
    try:
        return content.decode(encoding)
    except UnicodeDecodeError as error:
        line = content[:error.start].count(b"\n") + 1
        raise ValueError(
            f"{where} is not UTF-8 text: byte {content[error.start]:#04x} on line {line} cannot be decoded.{hint}"
        ) from None


def invalid_argument(name: str, value: Any, expected: str, error: type[Exception] = ValueError) -> Exception:
    """The house error for argument `name`: "Invalid value for argument
    `name`. Received: name=value. Expected ..."; the caller raises it."""
    return error(f"Invalid value for argument `{name}`. Received: {name}={value!r}. Expected {expected}.")


def _argument(name: str, value: Any, expected: str | None, predicate, **kwargs) -> Any:
    try:
        return predicate(value, **kwargs)
    except Rejected as rejected:
        error = TypeError if rejected.wrong_type else ValueError
        raise invalid_argument(name, value, expected or rejected.expected, error) from None


def positive_int(name: str, value: Any, *, minimum: int = 1, optional: bool = False) -> int | None:
    """A count: `value` as an `int >= minimum` (or `None` if `optional`).

    Raises:
        ValueError: For anything else, whatever its type (`epochs=0`,
            `epochs="3"`, `k=True`).
    """
    if value is None and optional:
        return None
    if not is_int(value) or value < minimum:
        raise invalid_argument(name, value, f"an int >= {minimum}" + (" or None" if optional else ""))
    return int(value)


def non_negative_int(name: str, value: Any, *, optional: bool = False) -> int | None:
    """`positive_int` with `minimum=0`."""
    return positive_int(name, value, minimum=0, optional=optional)


def check_int(name: str, value: Any, *, minimum: int | None = None, optional: bool = False,
              expected: str | None = None) -> int | None:
    """`value` as an `int` (or `None` if `optional`).

    Args:
        name: `str`. The argument's name, for the message.
        value: The value received.
        minimum: `int` or `None`. The smallest accepted value.
        optional: `bool`. Accept `None`. Defaults to `False`.
        expected: `str` or `None`. Replaces the message's "Expected ..."
            part, for a hint such as "the fold's seed".

    Raises:
        TypeError: `value` is not an int.
        ValueError: `value` is below `minimum`.
    """
    return _argument(name, value, expected, expect_int, minimum=minimum, optional=optional)


def check_seed(name: str, value: Any, *, optional: bool = False) -> int | None:
    """`value` as a seed NumPy's and scikit-learn's random states take: an
    `int` in `[0, 2**32 - 1]` (or `None` if `optional`).

    Raises:
        TypeError: `value` is not an int.
        ValueError: `value` is out of that range.
    """
    expected = "an int in [0, 2**32 - 1]" + (" or None" if optional else "")
    seed = check_int(name, value, optional=optional, expected=expected)
    if seed is not None and seed not in range(2**32):
        raise invalid_argument(name, value, expected)
    return seed


def check_real(name: str, value: Any, *, low: float | None = None, high: float | None = None,
               high_open: bool = False, optional: bool = False, expected: str | None = None) -> float | None:
    """`value` as a `float` in `[low, high]` (`[low, high)` with `high_open`),
    or `None` if `optional`. A probability is `check_real(name, p, low=0,
    high=1)`.

    Raises:
        TypeError: `value` is not a real number.
        ValueError: `value` is out of range.
    """
    return _argument(name, value, expected, expect_real, low=low, high=high, high_open=high_open,
                     optional=optional)


def check_bool(name: str, value: Any) -> bool:
    """`value` as a `bool` (NumPy bools too).

    Raises:
        TypeError: `value` is not a bool (`1` and `"yes"` are not).
    """
    return _argument(name, value, None, expect_bool)


def check_choice(name: str, value: Any, choices: Collection[Any], *, expected: str | None = None) -> Any:
    """`value` if it is one of `choices`.

    Raises:
        ValueError: It is not.
    """
    return _argument(name, value, expected, expect_choice, choices=choices)
