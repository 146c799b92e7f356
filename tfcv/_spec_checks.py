"""The words a model spec is checked in: `SpecError` and its two kinds, and
the checks that report a rejected value under its key path.

`tfcv.spec` writes every section's `__post_init__` with these. The rules
themselves (what an acceptable int, number, bool or choice is) are those of
`tfcv._checks`, shared with argument checks; this module words their
rejections for a spec file: ``Invalid value for `backbone.blocks[2].pooling`
in the model spec. Received: 'maxx'. Expected one of 'max', 'avg', null.``
A section checks its own keys by their names (`"pooling"`); its parent runs
it under `at(prefix)`, which lengthens the path of any error on the way out.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator, Mapping

import keras
import numpy as np

from tfcv import _checks


class SpecError(Exception):
    """An invalid model spec: the error names the key and what is wrong.

    Raised (as `SpecValueError` or `SpecTypeError`) by `ModelSpec` and its
    sections when a spec is made. The message reads ``Invalid value for
    `backbone.blocks[2].pooling` in the model spec. Received: 'maxx'.
    Expected one of 'max', 'avg', null.``; the lead word is "Unknown key",
    "Missing key" or "Misplaced key" when the key itself is the problem.
    Catch `SpecError` for any spec problem, or `ValueError`/`TypeError` as
    for any other invalid argument.

    Args:
        path: `str`. The key's path in the spec, such as
            `"backbone.blocks[2].pooling"`.
        detail: `str`. What was received and what is accepted.
        lead: `str`. The message's first words. Defaults to
            `"Invalid value for"`.

    Attributes:
        path: The key's path.
        detail: What was received and what is accepted.
        lead: The message's first words.

    Example:

    >>> try:
    ...     tfcv.ModelSpec.from_dict({"input_shape": [8, 8, 1], "num_classes": 1})
    ... except tfcv.SpecError as error:
    ...     print(error.path)
    num_classes
    """

    def __init__(self, path: str, detail: str, lead: str = "Invalid value for"):
        self.path, self.detail, self.lead = path, detail, lead
        super().__init__(f"{lead} `{path}` in the model spec. {detail}")

    def under(self, prefix: str) -> SpecError:
        """The same error for the key seen from a parent section `prefix`
        (`"pooling"` under `"blocks[2]"` becomes `"blocks[2].pooling"`)."""
        path = prefix + self.path if self.path.startswith("[") else f"{prefix}.{self.path}"
        return type(self)(path, self.detail, self.lead)

    def __reduce__(self):
        return type(self), (self.path, self.detail, self.lead)


class SpecValueError(SpecError, ValueError):
    """A spec key with a value of the right type that is not accepted
    (`num_classes: 1`), or an unknown, missing or misplaced key."""


class SpecTypeError(SpecError, TypeError):
    """A spec key with a value of the wrong type (`filters: many`)."""


@contextlib.contextmanager
def at(prefix: str) -> Iterator[None]:
    """Reports a `SpecError` raised inside under the parent key `prefix`."""
    try:
        yield
    except SpecError as error:
        raise error.under(prefix) from None


def invalid(path, value, expected, error=SpecValueError):
    """The error for a rejected value at `path`; the caller raises it."""
    return error(path, f"Received: {value!r}. Expected {expected}.")


def _expect(path, predicate, value, **kwargs):
    """Runs a `tfcv._checks.expect_*` predicate, reporting a rejection under
    the key `path` in YAML words (`null`, `true or false`)."""
    try:
        return predicate(value, yaml=True, **kwargs)
    except _checks.Rejected as rejected:
        raise invalid(path, value, rejected.expected, SpecTypeError if rejected.wrong_type else SpecValueError) from None


def check_int(path, value, *, minimum=None, optional=False):
    return _expect(path, _checks.expect_int, value, minimum=minimum, optional=optional)


def check_real(path, value, *, low=None, high=None, high_open=False):
    return _expect(path, _checks.expect_real, value, low=low, high=high, high_open=high_open)


def check_bool(path, value):
    return _expect(path, _checks.expect_bool, value)


def check_choice(path, value, choices):
    return _expect(path, _checks.expect_choice, value, choices=choices)


def check_activation(path, value):
    if not isinstance(value, str):
        raise invalid(path, value, "the name of a Keras activation such as 'relu'", SpecTypeError)
    try:
        keras.activations.get(value)
    except (ValueError, TypeError):
        raise invalid(path, value, "the name of a Keras activation such as 'relu', 'gelu' or 'swish'") from None
    return value


def check_int_or_pair(path, value, *, minimum=1):
    if isinstance(value, (list, tuple)):
        if len(value) != 2:
            raise invalid(path, value, "an int or a pair of ints")
        return tuple(check_int(f"{path}[{i}]", v, minimum=minimum) for i, v in enumerate(value))
    return check_int(path, value, minimum=minimum)


def freeze(value):
    """Lists to tuples, recursively, a private copy of every dict, and NumPy
    scalars and arrays as Python numbers and tuples (Keras refuses an
    `np.float32` momentum, YAML cannot write one)."""
    if isinstance(value, (np.generic, np.ndarray)):
        return freeze(value.tolist())
    if isinstance(value, Mapping):
        return {k: freeze(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return tuple(freeze(v) for v in value)
    return value


def plain(value):
    """A spec as YAML/JSON-ready builtins: dataclasses to dicts, tuples to lists."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return value


def check_section(cls, value, path):
    """Coerces a mapping into the spec dataclass `cls`, naming unknown keys."""
    if isinstance(value, cls):
        return value
    if not isinstance(value, Mapping):
        raise invalid(path, value, f"a mapping with keys {_field_names(cls)}", SpecTypeError)
    check_keys(cls, value, path)
    with at(path):
        return cls(**value)


def check_keys(cls, mapping, path):
    names = _field_names(cls)
    for key in mapping:
        if key not in names:
            where = f"{path}.{key}" if path else str(key)
            raise SpecValueError(where, f"Expected one of {names}.", lead="Unknown key")


def _field_names(cls) -> list[str]:
    return [f.name for f in dataclasses.fields(cls)]
