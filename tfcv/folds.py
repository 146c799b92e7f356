"""FoldPlan: which samples (or TFDS splits) each fold trains and validates on."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from tfcv import _atomic
from tfcv._checks import check_seed, is_int

__all__ = ["FoldPlan", "data_fingerprint", "check_folds"]

_FORMAT = "tfcv.FoldPlan"
_STRATIFIED_SPLITTERS = ("StratifiedKFold", "RepeatedStratifiedKFold", "StratifiedGroupKFold")


def data_fingerprint(x: Any, y: Any = None) -> dict:
    """Returns the shape, dtype and a SHA-256 digest of `x` (and `y`).

    Two arrays get the same fingerprint only if they hold the same values in
    the same order, so a plan (or a run directory) is never applied to other
    data by mistake.
    """
    x = np.ascontiguousarray(x)
    digest = hashlib.sha256()
    digest.update(str((x.shape, x.dtype.str)).encode())
    digest.update(_raw_bytes(x))
    fingerprint = {
        "n_samples": int(x.shape[0]) if x.ndim else 0,
        "x_shape": list(x.shape),
        "x_dtype": x.dtype.name,
    }
    if y is not None:
        y = np.ascontiguousarray(y)
        digest.update(str((y.shape, y.dtype.str)).encode())
        digest.update(_raw_bytes(y))
        fingerprint["y_shape"] = list(y.shape)
    fingerprint["digest"] = digest.hexdigest()
    return fingerprint


def _raw_bytes(array: np.ndarray):
    """The bytes of a contiguous array, without a copy where numpy allows."""
    try:
        return memoryview(array).cast("B")
    except (TypeError, ValueError):  # object arrays and dtypes the buffer protocol lacks
        return array.tobytes()


class FoldPlan:
    """Which samples each fold trains and validates on.

    A plan is a list of `(train, val)` pairs. For in-memory data each pair
    holds two integer index arrays into `x`; for TensorFlow Datasets each pair
    holds two TFDS split strings (see `tfcv.data.tfds_folds`). A plan made
    from data carries a fingerprint of that data, and `check_data` refuses
    any other data.

    Args:
        folds: Sequence of `(train, val)` pairs.
        fingerprint: `dict` from `data_fingerprint`, or `None`.
        splitter: `str`. Description of what made the plan (for humans).
        source: `dict`. Where the data lives for split-string plans (for
            example `{"tfds": "mnist", "load_kwargs": {...}}`).

    Example:

    >>> from sklearn.model_selection import StratifiedKFold
    >>> plan = tfcv.FoldPlan.from_splitter(StratifiedKFold(5), x, y)
    >>> train_idx, val_idx = plan.folds[0]
    >>> plan.save("plan.json"); plan = tfcv.FoldPlan.load("plan.json")
    """

    def __init__(
        self,
        folds: Sequence[tuple[Any, Any]],
        *,
        fingerprint: dict | None = None,
        splitter: str | None = None,
        source: dict | None = None,
    ):
        folds = list(folds)
        if len(folds) < 1:
            raise ValueError("Invalid value for argument `folds`. Received an empty list. Expected at least one (train, val) pair.")
        self.folds = [self._normalize_pair(i, pair, fingerprint) for i, pair in enumerate(folds)]
        self.fingerprint = dict(fingerprint) if fingerprint else None
        self.splitter = splitter
        self.source = dict(source) if source else None

    @staticmethod
    def _normalize_pair(i, pair, fingerprint):
        if not isinstance(pair, (tuple, list)) or len(pair) != 2:
            raise ValueError(f"Invalid fold {i}: expected a (train, val) pair. Received: {pair!r}")
        train, val = pair
        if isinstance(train, str) and isinstance(val, str):
            return train, val
        train = np.asarray(train)
        val = np.asarray(val)
        for name, idx in (("train", train), ("val", val)):
            if idx.ndim != 1 or not (idx.size == 0 or np.issubdtype(idx.dtype, np.integer)):
                raise ValueError(
                    f"Invalid fold {i}: `{name}` must be a 1-D array of integer indices. "
                    f"Received dtype={idx.dtype}, shape={idx.shape}."
                )
            if idx.size == 0:
                raise ValueError(f"Invalid fold {i}: `{name}` is empty. Every fold needs training and validation samples.")
            if idx.min() < 0:
                raise ValueError(f"Invalid fold {i}: `{name}` holds negative index {int(idx.min())}.")
            if fingerprint and idx.max() >= fingerprint["n_samples"]:
                raise ValueError(
                    f"Invalid fold {i}: `{name}` holds index {int(idx.max())} but the data has "
                    f"{fingerprint['n_samples']} samples."
                )
        overlap = np.intersect1d(train, val)
        if overlap.size:
            raise ValueError(
                f"Invalid fold {i}: {overlap.size} samples are in both train and val "
                f"(first: {overlap[:5].tolist()}). A fold must never validate on its training data."
            )
        return train.astype("int64"), val.astype("int64")

    @classmethod
    def from_splitter(cls, splitter: Any, x: Any, y: Any = None, groups: Any = None, *,
                      fingerprint: dict | None = None) -> FoldPlan:
        """Makes a plan from any scikit-learn-compatible splitter.

        Args:
            splitter: Anything with `split(X, y=None, groups=None)` yielding
                `(train, test)` index arrays: `KFold`, `StratifiedKFold`,
                `GroupKFold`, `StratifiedGroupKFold`, `RepeatedStratifiedKFold`, ...
            x: Array of samples (only its length and content digest are used
                unless the splitter itself looks at it).
            y: Optional labels (needed by stratified splitters).
            groups: Optional group labels (needed by group splitters).
            fingerprint: The data's `data_fingerprint`, when already known
                (by default `data_fingerprint(x, y)`).

        Returns:
            A `FoldPlan` with the data's fingerprint.
        """
        if not _is_splitter(splitter):
            raise TypeError(
                f"Invalid value for argument `splitter`. Received: splitter={splitter!r}. "
                "Expected a scikit-learn splitter (an object with a `split(X, y, groups)` method)."
            )
        x = np.asarray(x)
        n = len(x)
        y = None if y is None else np.asarray(y)
        _check_lengths(x, y, groups)
        n_splits = _n_splits(splitter, x, y, groups)
        if n_splits is not None and n < n_splits:
            raise ValueError(
                f"Cannot make {n_splits} folds from {n} samples: fewer samples than folds. "
                + (f"Use n_splits <= {n}." if n >= 2 else "Cross-validation needs at least 2 samples.")
            )
        if type(splitter).__name__ in _STRATIFIED_SPLITTERS and y is not None and n_splits is not None:
            per_repeat = getattr(splitter, "n_splits", n_splits)
            _check_class_counts(y, per_repeat)
        groups_arr = None if groups is None else np.asarray(groups)
        folds = list(splitter.split(x, y, groups_arr))
        return cls(folds, fingerprint=data_fingerprint(x, y) if fingerprint is None else fingerprint,
                   splitter=repr(splitter))

    # -- data checks -------------------------------------------------------

    def check_data(self, x: Any, y: Any = None) -> None:
        """Raises `ValueError` if `x`, `y` are not the data this plan was made for."""
        if self.fingerprint is None:
            return
        received = data_fingerprint(x, y if "y_shape" in self.fingerprint else None)
        if received["digest"] != self.fingerprint["digest"]:
            raise ValueError(
                "The FoldPlan does not match the data: it was made for data of shape "
                f"{tuple(self.fingerprint['x_shape'])} with digest {self.fingerprint['digest'][:12]}, "
                f"but received shape {tuple(received['x_shape'])} with digest {received['digest'][:12]}. "
                "Make a new plan with `FoldPlan.from_splitter` for this data."
            )

    @property
    def uses_indices(self) -> bool:
        return not isinstance(self.folds[0][0], str)

    # -- persistence -------------------------------------------------------

    def to_dict(self) -> dict:
        return {
            "format": _FORMAT,
            "version": 1,
            "splitter": self.splitter,
            "fingerprint": self.fingerprint,
            "source": self.source,
            "folds": [
                {"train": _to_json(train), "val": _to_json(val)} for train, val in self.folds
            ],
        }

    @classmethod
    def from_dict(cls, d: dict) -> FoldPlan:
        if not isinstance(d, dict) or d.get("format") != _FORMAT:
            raise ValueError(f"Not a FoldPlan: expected a dict with format={_FORMAT!r}.")
        folds = [(f["train"], f["val"]) for f in d["folds"]]
        return cls(folds, fingerprint=d.get("fingerprint"), splitter=d.get("splitter"), source=d.get("source"))

    def save(self, path: str | os.PathLike) -> None:
        """Writes the plan as JSON (atomically)."""
        _atomic.write_json(path, self.to_dict())

    @classmethod
    def load(cls, path: str | os.PathLike) -> FoldPlan:
        """Reads a plan written by `save`."""
        path = os.fspath(path)
        try:
            return cls.from_dict(_atomic.read_json(path))
        except (ValueError, KeyError, TypeError) as error:
            # A truncated file's JSON error alone names neither the file nor what it should hold.
            raise ValueError(f"{path} is not a readable FoldPlan ({type(error).__name__}: {error}).") from None

    def __eq__(self, other):
        if not isinstance(other, FoldPlan) or len(self) != len(other):
            return False
        return self.fingerprint == other.fingerprint and all(
            _same(a, b) and _same(c, d) for (a, c), (b, d) in zip(self.folds, other.folds)
        )

    __hash__ = None

    # -- sequence protocol -------------------------------------------------

    def __len__(self) -> int:
        return len(self.folds)

    def __iter__(self) -> Iterator[tuple[Any, Any]]:
        return iter(self.folds)

    def __getitem__(self, i):
        return self.folds[i]

    def __repr__(self) -> str:
        if self.uses_indices:
            sizes = ", ".join(f"{len(t)}/{len(v)}" for t, v in self.folds[:6])
            more = ", ..." if len(self.folds) > 6 else ""
            detail = f"train/val sizes=[{sizes}{more}]"
        else:
            detail = f"splits={[v for _, v in self.folds]}"
        return f"FoldPlan(n_folds={len(self)}, {detail}, splitter={self.splitter})"


def check_folds(folds: Any, x: Any, y: Any = None, groups: Any = None, *, seed: int | None = 0) -> FoldPlan:
    """Coerces `folds` into a `FoldPlan`, as scikit-learn's `check_cv` does.

    Args:
        folds: An int (`StratifiedKFold` with shuffling for class labels,
            `KFold` with shuffling otherwise), a scikit-learn splitter, or a
            `FoldPlan` (checked against the data's fingerprint).
        x, y, groups: The data.
        seed: `int`. Shuffling seed used when `folds` is an int.

    Returns:
        A `FoldPlan`.
    """
    from sklearn.model_selection import KFold, StratifiedKFold

    if isinstance(folds, FoldPlan):
        if folds.uses_indices:
            _check_lengths(np.asarray(x), None if y is None else np.asarray(y), groups)
            folds.check_data(x, y)
        return folds
    if is_int(folds):
        if folds < 2:
            raise ValueError(
                f"Invalid value for argument `folds`. Received: folds={folds}. "
                "Expected an int >= 2, a scikit-learn splitter or a FoldPlan."
            )
        if y is not None and is_classification_target(y):
            labels = class_labels(y)
            _check_class_counts(labels, folds)
            splitter = StratifiedKFold(int(folds), shuffle=True, random_state=seed)
            # The plan is checked against the data as given, not its class indices.
            return FoldPlan.from_splitter(splitter, x, labels, groups, fingerprint=data_fingerprint(x, y))
        return FoldPlan.from_splitter(KFold(int(folds), shuffle=True, random_state=seed), x, y, groups)
    if _is_splitter(folds):
        return FoldPlan.from_splitter(folds, x, y, groups)
    raise TypeError(
        f"Invalid value for argument `folds`. Received: folds={folds!r} of type {type(folds).__name__}. "
        "Expected an int >= 2, a scikit-learn splitter or a FoldPlan."
    )


def holdout_split(x: Any, y: Any, *, test_size: float, seed: int | None = 0) -> tuple:
    """Holds out a test set before any fold is made.

    For class labels the split is stratified, so the test set keeps the
    classes' proportions (as `tfcv run --test-size` does).

    Args:
        x: Array of samples.
        y: Array of targets, one per sample.
        test_size: `float`. Fraction of the samples held out, between 0 and
            1.
        seed: `int`. Seed of the shuffle. Defaults to `0`.

    Returns:
        `(x_train, x_test, y_train, y_test)`, as scikit-learn's
        `train_test_split`.

    Example:

    >>> x_train, x_test, y_train, y_test = holdout_split(x, y, test_size=0.2)
    >>> result = tfcv.CrossValidator(build_fn).fit(x_train, y_train)
    >>> result.evaluate(x_test, y_test)
    """
    from sklearn.model_selection import train_test_split

    if isinstance(test_size, bool) or not isinstance(test_size, (int, float, np.number)) or not 0 < test_size < 1:
        raise ValueError(
            f"Invalid value for argument `test_size`. Received: test_size={test_size!r}. "
            "Expected a fraction between 0 and 1."
        )
    check_seed("seed", seed, optional=True)
    _check_lengths(np.asarray(x), np.asarray(y), None)
    stratify = class_labels(y) if is_classification_target(y) else None
    return tuple(train_test_split(x, y, test_size=test_size, stratify=stratify, random_state=seed))


def is_classification_target(y: Any) -> bool:
    """True for class labels: integer/bool/str labels or one-hot rows."""
    from sklearn.utils.multiclass import type_of_target

    y = np.asarray(y)
    kind = type_of_target(y)
    if kind in ("binary", "multiclass"):
        return True
    if kind == "multilabel-indicator":
        return bool(np.all(y.sum(axis=-1) == 1))
    return False


def class_labels(y: Any) -> np.ndarray:
    """Integer-or-string class labels, with one-hot rows turned into indices."""
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] > 1:
        return y.argmax(axis=1)
    return y.reshape(len(y))


def _is_splitter(obj) -> bool:
    # A str has a `split` method too; scikit-learn's check_cv excludes it the same way.
    return hasattr(obj, "split") and not isinstance(obj, (str, bytes))


def _n_splits(splitter, x, y, groups):
    try:
        return int(splitter.get_n_splits(x, y, groups))
    except Exception:  # noqa: BLE001 - custom splitters may not implement it
        return None


def _check_lengths(x, y, groups) -> None:
    if x.ndim == 0:
        raise ValueError(f"Invalid value for argument `x`: expected an array of samples, received a scalar {x!r}.")
    n = len(x)
    if y is not None and len(y) != n:
        raise ValueError(
            f"`x` and `y` have different lengths: len(x)={n}, len(y)={len(y)}. "
            "Expected one label per sample."
        )
    if groups is not None and len(groups) != n:
        raise ValueError(
            f"Invalid value for argument `groups`: len(groups)={len(groups)}, but len(x)={n}. "
            "Expected one group label per sample."
        )


def _check_class_counts(y, n_splits: int) -> None:
    labels, counts = np.unique(class_labels(y), return_counts=True)
    too_few = [(label, count) for label, count in zip(labels, counts) if count < n_splits]
    if too_few:
        listed = ", ".join(f"class {_py(label)!r} has {count}" for label, count in too_few)
        fewest = int(min(counts))
        # Fewer than 2 folds is no cross-validation: a one-member class needs another remedy.
        remedy = f"Use fewer folds (folds <= {fewest})" if fewest >= 2 else "Remove or merge the classes with one member"
        raise ValueError(
            f"Stratified {n_splits}-fold cross-validation needs at least {n_splits} members of every "
            f"class, but {listed}. {remedy}, or pass a non-stratified splitter such as sklearn.model_selection.KFold."
        )


def _py(value):
    return value.item() if hasattr(value, "item") else value


def _to_json(part):
    return part if isinstance(part, str) else np.asarray(part).tolist()


def _same(a, b) -> bool:
    if isinstance(a, str) or isinstance(b, str):
        return a == b
    return np.array_equal(a, b)
