"""TensorFlow Datasets folds: plans of TFDS splits, streamed fold by fold.

The in-memory path (`x`, `y` arrays and index folds) suits small data. This
module cross-validates data that lives on disk as a TensorFlow Datasets (TFDS)
dataset, without ever loading it whole:

- `tfds_folds` makes a `FoldPlan` whose folds are TFDS split strings built
  with TFDS' percent slicing (`"train[0%:20%]"`), or, with `stratify=True`,
  index folds made from the labels alone.
- `fold_datasets` streams one fold's training and validation data from disk
  as batched, prefetched `tf.data.Dataset`s of `(x, y)`.
- `Pipeline` (from `tfcv._pipeline`) is the input pipeline those datasets go
  through (decode, resize, rescale, cache, shuffle, batch, prefetch); it works
  on any `tf.data.Dataset`.
- `DigitsBuilder` and `prepare_digits` (from `tfcv._digits_tfds`) make a real
  TFDS dataset of scikit-learn's embedded digits, offline, so the whole TFDS
  path runs without a network; importing this module registers it as
  `"tfcv_digits"`.

`tfcv.CrossValidator(build_fn, folds=tfds_folds(...)).fit(epochs=...)`
streams every fold this way (no `x`, no `y`: the plan says where the data
is). Any other pipeline is cross-validated by passing `fit` a callable
`fold -> (train_ds, val_ds)` instead.

How percent slices round: TFDS resolves a boundary of `p` percent on a split
of `n` examples to `round(p * n / 100)` (its default `rounding="closest"`;
the other mode, `"pct1_dropremainder"`, drops examples and is never used
here). Fold `i` of `k` validates on `[100*i/k % : 100*(i+1)/k %]`, written
with enough digits to be exact, and trains on the two slices around it. Two
neighbouring folds share the very same boundary string, so the validation
slices are disjoint and cover the split exactly for any `n >= k`, and their
sizes differ by at most one example.

Stratification is impossible with slices: a slice is a contiguous run of
examples, whatever their labels. `tfds_folds(..., stratify=True)` reads the
labels once (decoding the label feature only, never the images), makes index
folds with scikit-learn's `StratifiedKFold`, and at load time reads the split
in its stored order and keeps the examples of the fold (a boolean mask
indexed by position). Every epoch then reads the whole split from disk (the
other folds' examples are skipped before their images are decoded), which
costs I/O but no memory.

Memory: a streamed fold holds TFDS' read buffers (8 MiB per open file), the
shuffle buffer and a few prefetched batches, whatever the dataset's size
(`bench/stream_memory.py` measures it). On Linux, glibc's per-thread malloc
arenas keep freed tf.data buffers, so the resident size can still creep up
epoch after epoch; `MALLOC_ARENA_MAX=2` (or tcmalloc) keeps it flat.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from typing import Any

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from tfcv import _checks
from tfcv._checks import is_int
from tfcv._digits_tfds import DIGITS_NAME, DigitsBuilder, prepare_digits
from tfcv._pipeline import Pipeline
from tfcv.folds import FoldPlan, _check_class_counts, data_fingerprint

__all__ = [
    "DIGITS_NAME",
    "DigitsBuilder",
    "Pipeline",
    "fold_datasets",
    "fold_indices",
    "labels_of",
    "prepare_digits",
    "tfds_folds",
]

_SPLIT_NAME = re.compile(r"^[\w-]+$")
# Arguments of `tfds.load` that `fold_datasets` sets itself for every fold.
_MANAGED_LOAD_KWARGS = (
    "split", "as_supervised", "shuffle_files", "read_config", "with_info", "batch_size",
    "decoders",
)
_LABEL_BATCH = 4096


def tfds_folds(
    name: str,
    k: int = 5,
    split: str = "train",
    *,
    stratify: bool = False,
    seed: int = 0,
    supervised_keys: tuple[str, str] | None = None,
    **load_kwargs: Any,
) -> FoldPlan:
    """A k-fold `FoldPlan` over one split of a TensorFlow Datasets dataset.

    Without stratification the folds are TFDS split strings and nothing is
    read: fold `i` validates on `"train[{20*i}%:{20*(i+1)}%]"` (for `k=5`)
    and trains on the rest, for example `"train[:20%]+train[40%:]"`. The
    validation slices are disjoint and cover the split exactly, whatever its
    size (see the module docstring for TFDS' rounding). TFDS shuffles most
    datasets when preparing them, so contiguous slices are random samples;
    for a dataset stored in a meaningful order (sorted by class or by time),
    use `stratify=True`.

    Stratification is not possible with slices. With `stratify=True` the
    labels (only) are read once, `StratifiedKFold(k, shuffle=True,
    random_state=seed)` makes index folds into the split's stored order, and
    the plan carries a fingerprint of those labels (`n_samples` is the size
    of the split). `fold_datasets` then selects each fold's examples while
    streaming the split.

    The plan records where the data lives in `plan.source`:
    `{"kind": "tfds", "name": name, "split": split, "load_kwargs": {...}}`,
    so it round-trips through `plan.save` / `FoldPlan.load`.

    Args:
        name: `str`. TFDS name, as given to `tfds.load` (`"mnist"`,
            `"cifar10:3.0.2"`, `"tfcv_digits"`, ...). The dataset needs
            supervised keys (`as_supervised=True`), or `supervised_keys`.
        k: `int`. Number of folds, at least 2. Defaults to `5`.
        split: `str`. Name of the split to cross-validate (not a slice).
            Defaults to `"train"`.
        stratify: `bool`. Make stratified index folds from the labels.
            Defaults to `False`.
        seed: `int`. Shuffling seed of `StratifiedKFold` (used only with
            `stratify=True`; slices are not shuffled). Defaults to `0`.
        supervised_keys: `(input_key, label_key)`: the features read as
            `(x, y)`, for a dataset without supervised keys (or to read
            others than its own). Defaults to `None`: the dataset's
            `info.supervised_keys`.
        **load_kwargs: JSON-able keyword arguments for `tfds.load`, such as
            `data_dir`, `download`, `try_gcs` or `builder_kwargs`. The
            per-fold arguments (`split`, `as_supervised`, `shuffle_files`,
            `read_config`, `decoders`, `batch_size`, `with_info`) are set by
            `fold_datasets` and refused here.

    Returns:
        A `FoldPlan` with `k` folds.

    Example:

    >>> plan = tfcv.data.tfds_folds("mnist", k=5, data_dir="~/tensorflow_datasets")
    >>> plan.folds[1]
    ('train[:20%]+train[40%:]', 'train[20%:40%]')
    >>> cv = tfcv.CrossValidator(build_fn, folds=plan)
    >>> result = cv.fit(epochs=3, batch_size=64)
    """
    if not isinstance(name, str) or not name:
        raise TypeError(
            f"Invalid value for argument `name`. Received: name={name!r}. "
            "Expected the name of a TFDS dataset, such as 'mnist'."
        )
    k = _checks.positive_int("k", k, minimum=2)
    if not isinstance(split, str) or not _SPLIT_NAME.match(split) or split == "all":
        raise ValueError(
            f"Invalid value for argument `split`. Received: split={split!r}. Expected the name of one "
            "split, such as 'train' (tfds_folds slices it itself; to cross-validate part of a "
            "split or several splits, use fold_datasets' callable form instead)."
        )
    stratify = _checks.check_bool("stratify", stratify)
    _checks.check_int("seed", seed)
    source = {"kind": "tfds", "name": name, "split": split, "load_kwargs": _check_load_kwargs(load_kwargs)}
    if supervised_keys is not None:
        if (isinstance(supervised_keys, (str, bytes)) or not isinstance(supervised_keys, (list, tuple))
                or len(supervised_keys) != 2 or not all(isinstance(k, str) and k for k in supervised_keys)):
            raise _checks.invalid_argument("supervised_keys", supervised_keys, "a pair (input_key, label_key) of "
                                           "feature names", TypeError)
        # Only when given, so plans of datasets read by their own keys stay as they were.
        source["supervised_keys"] = list(supervised_keys)

    try:
        builder = _builder(source)
    except Exception as error:  # noqa: BLE001 - TFDS raises several unrelated types for a bad name or version
        # TFDS' own message goes on to list every dataset it knows, a thousand lines; keep the
        # first and its suggestion ("Did you mean: mnsit -> mnist ?").
        lines = str(error).strip().splitlines() or [type(error).__name__]
        reason = " ".join([lines[0], *(line.strip() for line in lines[1:] if line.startswith("Did you mean"))])
        raise ValueError(
            f"Invalid value for argument `name`. Received: name={name!r}. Expected a registered TFDS dataset "
            f"(tfds.list_builders()), optionally with an available version such as 'mnist:3.0.1': {reason}"
        ) from None
    if source["load_kwargs"].get("download") is False and not builder.is_prepared():
        where = source["load_kwargs"].get("data_dir") or "the default data_dir (~/tensorflow_datasets)"
        raise ValueError(
            f"TFDS dataset {name!r} is not prepared in {where}, and download=False. Run `tfds build {name}` "
            "first, or pass the data_dir where it is prepared."
        )
    info = builder.info
    _supervised_keys(source, info)
    known_splits = dict(info.splits)
    if known_splits:
        if split not in known_splits:
            raise ValueError(
                f"Invalid value for argument `split`. Received: split={split!r}. "
                f"Dataset {name!r} has splits {sorted(known_splits)}."
            )
        n = known_splits[split].num_examples
        if n < k:
            raise ValueError(
                f"Cannot make k={k} folds from split {split!r} of {name!r}: it has {n} examples. Use k <= {n}."
            )

    described = f"tfds_folds(name={name!r}, k={k}, split={split!r}"
    if not stratify:
        return FoldPlan(_percent_folds(split, k), splitter=described + ")", source=source)

    from sklearn.model_selection import StratifiedKFold

    labels = _read_labels(source)
    if labels.ndim != 1:
        raise ValueError(
            f"stratify=True needs one class label per example, but the labels of {name!r} have shape "
            f"{labels.shape[1:]} per example. Use stratify=False."
        )
    if len(labels) < k:
        raise ValueError(
            f"Cannot make k={k} folds from split {split!r} of {name!r}: it has {len(labels)} examples. "
            f"Use k <= {len(labels)}."
        )
    _check_class_counts(labels, k)
    splitter = StratifiedKFold(k, shuffle=True, random_state=int(seed))
    folds = list(splitter.split(np.zeros(len(labels)), labels))
    return FoldPlan(
        folds,
        fingerprint=data_fingerprint(labels),
        splitter=f"{described}, stratify=True, seed={int(seed)}): {splitter!r} on the labels",
        source=source,
    )


def _percent_folds(split: str, k: int) -> list[tuple[str, str]]:
    bounds = [_percent(100 * i / k) for i in range(k + 1)]
    folds = []
    for i in range(k):
        val = f"{split}[{bounds[i]}%:{bounds[i + 1]}%]"
        train = []
        if i > 0:
            train.append(f"{split}[:{bounds[i]}%]")
        if i < k - 1:
            train.append(f"{split}[{bounds[i + 1]}%:]")
        folds.append(("+".join(train), val))
    return folds


def _percent(value: float) -> str:
    # TFDS parses the boundary with float(); repr is the shortest string that
    # parses back to exactly the same float, so no precision is lost on big splits.
    short = f"{value:g}"
    return short if float(short) == value else repr(value)


def fold_datasets(
    plan: FoldPlan,
    fold: int,
    *,
    batch_size: int,
    seed: int,
    shuffle: bool = True,
    pipeline: Pipeline | None = None,
) -> tuple[tf.data.Dataset, tf.data.Dataset]:
    """Streams one fold of a TFDS plan from disk.

    The training data is read with `shuffle_files=True` and
    `read_config.shuffle_seed=seed` (files stay in order for a dataset
    prepared in a fixed order, `info.disable_shuffling`, and for stratified
    plans), then shuffled with `seed` in a buffer of
    `pipeline.shuffle_buffer` examples: a different order every epoch, the
    same orders in every run with the same seed. The validation data is read
    in the split's stored order (one file after the other, never shuffled),
    so its examples come in the order of `fold_indices(plan, fold)[1]`.
    Nothing is held in memory beyond the shuffle buffer, the prefetched
    batches and whatever `pipeline.cache` asks for. TFDS' own automatic
    cache of small datasets is turned off (`try_autocache=False`).

    Args:
        plan: A `FoldPlan` made by `tfds_folds` (or loaded from its JSON).
        fold: `int`. Index of the fold.
        batch_size: `int`. Examples per batch.
        seed: `int`. The fold's seed: file order and shuffle buffer of the
            training data.
        shuffle: `bool`. Shuffle the training data. With `False` both
            datasets come in stored order. Defaults to `True`.
        pipeline: A `Pipeline` (or its dict) applied to both datasets.
            Defaults to `Pipeline()`: no transformation, no cache.

    Returns:
        Tuple `(train_ds, val_ds)` of batched, prefetched `tf.data.Dataset`s
        of `(x, y)`.

    Example:

    >>> plan = tfcv.data.tfds_folds("tfcv_digits", k=5, data_dir=data_dir)
    >>> train_ds, val_ds = tfcv.data.fold_datasets(
    ...     plan, 0, batch_size=64, seed=0, pipeline=tfcv.data.Pipeline(rescale=1 / 16))
    >>> model.fit(train_ds, validation_data=val_ds, epochs=5)
    """
    source = _tfds_source(plan)
    fold = _fold_index(plan, fold)
    batch_size = _checks.positive_int("batch_size", batch_size)
    _checks.check_int("seed", seed)
    shuffle = _checks.check_bool("shuffle", shuffle)
    pipeline = Pipeline() if pipeline is None else Pipeline.from_dict(pipeline)
    train_part, val_part = plan.folds[fold]
    if isinstance(val_part, str):
        # A dataset prepared in a meaningful order (disable_shuffling) refuses
        # shuffled files; its training examples are still shuffled below.
        shuffle_files = shuffle and not _builder(source).info.disable_shuffling
        train = _load(source, train_part, shuffle_files=shuffle_files, seed=int(seed))
        val = _load(source, val_part)
    else:
        n = _plan_size(plan)
        train = _select(source, train_part, n)
        val = _select(source, val_part, n)
    digest = hashlib.sha256(json.dumps([source, _describe_part(train_part)], sort_keys=True).encode())
    train = pipeline(
        train, batch_size=batch_size, training=shuffle, seed=int(seed),
        cache_name=f"fold_{fold}_train_{digest.hexdigest()[:12]}",
    )
    digest = hashlib.sha256(json.dumps([source, _describe_part(val_part)], sort_keys=True).encode())
    val = pipeline(val, batch_size=batch_size, training=False, cache_name=f"fold_{fold}_val_{digest.hexdigest()[:12]}")
    return train, val


def fold_indices(plan: FoldPlan, fold: int) -> tuple[np.ndarray, np.ndarray]:
    """Positions, in the split's stored order, of one fold's examples.

    Percent slices are resolved by TFDS itself (`ReadInstruction.from_spec`
    and `to_absolute`) against the split's size. Out-of-fold predictions of
    `fold_datasets`' validation data belong to these positions, in this
    order.

    Args:
        plan: A `FoldPlan` made by `tfds_folds`.
        fold: `int`. Index of the fold.

    Returns:
        Tuple `(train, val)` of int64 arrays: the training positions (sorted;
        training order is shuffled anyway) and the validation positions in
        the order `fold_datasets` yields them.
    """
    _tfds_source(plan)
    fold = _fold_index(plan, fold)
    train_part, val_part = plan.folds[fold]
    if not isinstance(val_part, str):
        return np.sort(train_part), np.sort(val_part)
    split_infos = {plan.source["split"]: _split_info(plan.source["split"], _plan_size(plan))}
    return np.sort(_resolve(train_part, split_infos)), _resolve(val_part, split_infos)


def labels_of(plan: FoldPlan, fold: int | None = None) -> np.ndarray:
    """Reads the labels of a TFDS plan's split, without decoding the inputs.

    Only the supervised label feature is decoded (TFDS'
    `tfds.decode.PartialDecoding`), so this is cheap even for large images.

    Args:
        plan: A `FoldPlan` made by `tfds_folds`.
        fold: `int` or `None`. With `None`, the labels of the whole split in
            stored order; with a fold index, the labels of that fold's
            validation data in the order `fold_datasets` yields them.
            Defaults to `None`.

    Returns:
        A NumPy array with one label per example.
    """
    source = _tfds_source(plan)
    labels = _read_labels(source)
    if plan.fingerprint and plan.fingerprint.get("n_samples") not in (None, len(labels)):
        raise ValueError(
            f"The FoldPlan does not match the data: it was made for {plan.fingerprint['n_samples']} "
            f"examples, but split {source['split']!r} of {source['name']!r} now has {len(labels)}. "
            "Make a new plan with tfcv.data.tfds_folds."
        )
    if fold is None:
        return labels
    return labels[fold_indices(plan, fold)[1]]


def _tfds_source(plan) -> dict:
    if not isinstance(plan, FoldPlan):
        raise TypeError(
            f"Invalid value for argument `plan`. Received: plan={plan!r} of type {type(plan).__name__}. "
            "Expected a FoldPlan made by tfcv.data.tfds_folds."
        )
    source = plan.source or {}
    if source.get("kind") != "tfds":
        raise ValueError(
            f"Invalid value for argument `plan`. Received a FoldPlan with source={plan.source!r}. "
            "Expected a plan made by tfcv.data.tfds_folds (source kind 'tfds')."
        )
    return source


def _fold_index(plan, fold) -> int:
    if not is_int(fold) or not 0 <= fold < len(plan):
        raise _checks.invalid_argument("fold", fold, f"an int in [0, {len(plan) - 1}] for this {len(plan)}-fold plan")
    return int(fold)


def _describe_part(part):
    return part if isinstance(part, str) else hashlib.sha256(np.asarray(part, "int64").tobytes()).hexdigest()


def _check_load_kwargs(load_kwargs: dict) -> dict:
    managed = sorted(set(load_kwargs) & set(_MANAGED_LOAD_KWARGS))
    if managed:
        key = managed[0]
        raise ValueError(
            f"Invalid keyword argument `{key}`. Received: {key}={load_kwargs[key]!r}. "
            f"fold_datasets sets {', '.join(_MANAGED_LOAD_KWARGS)} itself for every fold; "
            "pass only dataset-wide tfds.load arguments such as data_dir or builder_kwargs."
        )
    normalized = {}
    for key, value in load_kwargs.items():
        if isinstance(value, os.PathLike):
            value = os.fspath(value)
        if key == "data_dir" and isinstance(value, str):
            value = os.path.abspath(os.path.expanduser(value))
        try:
            json.dumps(value)
        except TypeError as error:
            raise TypeError(
                f"Invalid keyword argument `{key}`. Received: {key}={value!r}. The plan stores "
                "load_kwargs as JSON, so expected JSON-able values (str, numbers, bools, lists, dicts)."
            ) from error
        normalized[key] = value
    return normalized


def _builder(source: dict) -> tfds.core.DatasetBuilder:
    kwargs = source["load_kwargs"]
    return tfds.builder(source["name"], data_dir=kwargs.get("data_dir"), **kwargs.get("builder_kwargs", {}))


def _supervised_keys(source, info) -> tuple[Any, Any]:
    """The features read as `(x, y)`: the plan's `supervised_keys`, or the dataset's own."""
    name = source["name"]
    features = sorted(info.features.keys()) if isinstance(info.features, tfds.features.FeaturesDict) else []
    chosen = source.get("supervised_keys")
    if chosen:
        for key in chosen:
            if key not in features:
                raise ValueError(
                    f"Invalid value for argument `supervised_keys`. Received: supervised_keys={tuple(chosen)!r}. "
                    f"Dataset {name!r} has no feature {key!r}; its features are {features}."
                )
        return chosen[0], chosen[1]
    keys = info.supervised_keys
    if not keys or len(keys) < 2:
        raise ValueError(
            f"Dataset {name!r} has no supervised keys (info.supervised_keys={keys!r}), so it cannot be "
            f"read as (x, y) pairs without being told which features to read: pass supervised_keys=(input_key, "
            f"label_key) (`image_key` and `label_key` in a `data:` section), from its features {features}, or "
            "cross-validate it with a callable fold -> (train_ds, val_ds)."
        )
    return keys[0], keys[1]


def _load(source, split, *, shuffle_files=False, seed=None, as_supervised=True, decoders=None) -> tf.data.Dataset:
    config = {
        # Caching is the pipeline's explicit choice; TFDS' automatic cache of
        # small datasets would quietly hold a split in memory.
        "try_autocache": False,
        "shuffle_seed": seed,
    }
    if not shuffle_files:
        # TFDS interleaves 16 files at a time by default; one at a time reads
        # the examples in their stored order.
        config["interleave_cycle_length"] = 1
    keys = source.get("supervised_keys") if as_supervised else None
    if keys:
        # Only the two features are decoded; the others of each example are dropped unread.
        decoders = tfds.decode.PartialDecoding({key: True for key in keys}, decoders=decoders)
    ds = tfds.load(
        source["name"],
        split=split,
        as_supervised=as_supervised and not keys,
        shuffle_files=shuffle_files,
        read_config=tfds.ReadConfig(**config),
        decoders=decoders,
        **source["load_kwargs"],
    )
    if keys:
        ds = ds.map(lambda example: (example[keys[0]], example[keys[1]]), num_parallel_calls=tf.data.AUTOTUNE,
                    deterministic=True)
    return ds


def _select(source, indices, n) -> tf.data.Dataset:
    """The examples at `indices` (in stored order) of the whole split."""
    info = _builder(source).info
    input_key, _ = _supervised_keys(source, info)
    feature = info.features[input_key] if isinstance(input_key, str) else None
    # Skip decoding the inputs of the examples of other folds: they are
    # filtered out right after, so decoding them would be wasted work.
    skip = isinstance(feature, tfds.features.FeatureConnector) and not isinstance(feature, tfds.features.FeaturesDict)
    decoders = {input_key: tfds.decode.SkipDecoding()} if skip else None
    ds = _load(source, source["split"], decoders=decoders)
    mask = np.zeros(n, dtype=bool)
    mask[np.asarray(indices)] = True
    mask = tf.constant(mask)

    def keep(position, example):
        return tf.logical_and(position < n, tf.gather(mask, tf.minimum(position, n - 1)))

    ds = ds.enumerate().filter(keep).map(lambda position, example: example)
    if skip:
        ds = ds.map(
            lambda x, y: (feature.decode_example(x), y),
            num_parallel_calls=tf.data.AUTOTUNE,
            deterministic=True,
        )
    return ds.apply(tf.data.experimental.assert_cardinality(len(indices)))


def _read_labels(source) -> np.ndarray:
    info = _builder(source).info
    _, label_key = _supervised_keys(source, info)
    if not isinstance(label_key, str):
        raise ValueError(
            f"Dataset {source['name']!r} has nested label keys {label_key!r}; reading labels needs a "
            "single label feature."
        )
    ds = _load(
        source, source["split"], as_supervised=False,
        decoders=tfds.decode.PartialDecoding({label_key: True}),
    )
    batches = [batch[label_key] for batch in ds.batch(_LABEL_BATCH).as_numpy_iterator()]
    return np.concatenate(batches) if batches else np.zeros((0,), "int64")


def _plan_size(plan) -> int:
    if plan.fingerprint and plan.fingerprint.get("n_samples"):
        return int(plan.fingerprint["n_samples"])
    source = plan.source
    splits = dict(_builder(source).info.splits)
    if source["split"] in splits:
        return int(splits[source["split"]].num_examples)
    # Unknown size (a mocked dataset): count the examples, reading labels only.
    return len(_read_labels(source))


def _split_info(split: str, n: int) -> tfds.core.SplitInfo:
    return tfds.core.SplitInfo(name=split, shard_lengths=[int(n)], num_bytes=0)


def _resolve(spec: str, split_infos) -> np.ndarray:
    """Absolute positions of a split string, in read order, as TFDS resolves them."""
    parts = tfds.core.ReadInstruction.from_spec(spec).to_absolute(split_infos)
    ranges = []
    for part in parts:
        n = split_infos[part.splitname].num_examples
        start = 0 if part.from_ is None else part.from_
        stop = n if part.to is None else part.to
        ranges.append(np.arange(start, stop, dtype="int64"))
    return np.concatenate(ranges) if ranges else np.zeros((0,), "int64")
