"""What each fold trains and validates on: in-memory arrays, a TFDS plan or a callable.

A fold source turns the user's data and the `FoldPlan` into one `_FoldData`
per fold (batched `tf.data` pipelines, the input that preprocessing layers
adapt on, the validation labels). Every strategy reads folds through it.
"""

from __future__ import annotations

import copy

import numpy as np

from tfcv._targets import DataView, check_element, check_fold_labels, check_samples, read_targets
from tfcv.folds import (
    FoldPlan,
    check_folds,
    class_labels,
    data_fingerprint,
    is_classification_target,
)
from tfcv.sources import ImageFiles


def fold_source(folds, x, y, groups, *, seed, batch_size, pipeline, sample_weight=None, class_weight=None):
    """The source for `CrossValidator.fit`'s data arguments."""
    if (sample_weight is not None or class_weight is not None) and (x is None or callable(x) and not hasattr(x, "shape")):
        raise ValueError(
            "`sample_weight` and `class_weight` apply to in-memory arrays; streamed folds carry their weights "
            "as the third element of each (x, y, sample_weight) batch."
        )
    if callable(x) and not hasattr(x, "shape") and not isinstance(x, (list, tuple)):
        if y is not None:
            raise ValueError("`y` must be None when `x` is a callable returning (train_ds, val_ds): the datasets hold the targets.")
        return _DatasetSource(folds, x, batch_size=batch_size, pipeline=pipeline)
    if x is None and isinstance(folds, FoldPlan) and (folds.source or {}).get("kind") == "tfds":
        if y is not None:
            raise ValueError("`y` must be None when the FoldPlan streams a TFDS dataset: the dataset holds the labels.")
        return _DatasetSource(folds, None, batch_size=batch_size, pipeline=pipeline)
    if pipeline is not None:
        raise ValueError("`pipeline` applies to TFDS plans only; transform in-memory arrays before calling fit.")
    if isinstance(x, ImageFiles):
        return _FileSource(folds, x, y, groups, seed=seed, batch_size=batch_size, sample_weight=sample_weight,
                           class_weight=class_weight)
    return _ArraySource(folds, x, y, groups, seed=seed, batch_size=batch_size, sample_weight=sample_weight,
                        class_weight=class_weight)


def without_autograph(function):
    """`function` for `Dataset.map`, left as it is by AutoGraph. The gathering
    functions have no Python control flow on tensors; converting one cost
    about 35 ms each time a pipeline was made (twice a fold)."""
    import tensorflow as tf

    return tf.autograph.experimental.do_not_convert(function)


class _FoldData:
    """What one fold trains and validates on, ready for `model.fit`.

    `train` is a batched `tf.data.Dataset` of `(x, y)`: for in-memory arrays
    it repeats forever, reshuffled every pass, and `steps` is the number of
    batches in one epoch; for streamed folds it is the user's (or TFDS')
    finite dataset and `steps` is `None` until `repeated` counts it.
    `validation` is a batched dataset of `(x, y)`. `adapt_input` is what
    `tfcv.preprocessing.adapt_preprocessing` reads: the training inputs, or
    a function that returns them.
    """

    def __init__(self, *, train, steps, validation, adapt_input, n_train, n_val, val_labels, val_weights=None,
                 train_rows=None):
        self.val_weights = val_weights
        self._train_rows = train_rows
        self.train = train
        self.steps = steps
        self.validation = validation
        self.adapt_input = adapt_input
        self.n_train = n_train
        self.n_val = n_val
        self.val_labels = val_labels

    @property
    def train_rows(self):
        """(predict-order dataset of the training rows, their labels, their
        weights) for `return_train_score`; None when the source has none.

        Made on first use: building the dataset traces its gathering function
        (about 50 ms a fold), which only `return_train_score` needs."""
        if callable(self._train_rows):
            self._train_rows = self._train_rows()
        return self._train_rows

    def mixed(self, mixer) -> _FoldData:
        """The same fold with `mixer` (a `tfcv.layers.BatchMixer`) applied to
        every training batch."""
        import tensorflow as tf

        train = self.train.map(lambda x, y, *rest: (*mixer(x, y), *rest), num_parallel_calls=tf.data.AUTOTUNE)
        return self._replace(train=train.prefetch(tf.data.AUTOTUNE))

    def repeated(self, k) -> _FoldData:
        """The same fold with its training data repeating forever and `steps`
        the batches of one pass (in-memory folds come so already).

        Epoch `e` is then batches `e * steps` to `(e + 1) * steps - 1` of one
        stream, and a resumed fold skips the epochs done, as the stacked
        strategy does. A dataset that reshuffles every iteration draws each
        pass's order when the pass begins, from the number of passes begun
        before on that dataset object: handed the finite dataset, Keras
        begins a pass at every epoch (two when it knows the length), so a
        resumed `fit` started over at the first order.
        """
        if self.steps is not None:
            return self
        return self._replace(train=self.train.repeat(), steps=batches_per_pass(self.train, k))

    def _replace(self, **changes) -> _FoldData:
        data = copy.copy(self)
        data.__dict__.update(changes)
        return data


class _ArraySource:
    """In-memory arrays and an index FoldPlan, fed through `tf.data`: every
    fold gathers its batches from one copy of the arrays.

    String labels are trained on as integers (`y`, indices into the sorted
    `class_names`); the fold plan and the fingerprint see them as given, so
    the same data always gives the same run.
    """

    def __init__(self, folds, x, y, groups, *, seed, batch_size, sample_weight=None, class_weight=None):
        if x is None:
            raise ValueError("Invalid value for argument `x`. Received: x=None. Expected an array of samples.")
        if y is None:
            raise ValueError("Invalid value for argument `y`. Received: y=None. Expected an array of targets.")
        self.x = check_samples(x)
        self.given_y, self.y, self.class_names = read_targets(y)
        self.plan = check_folds(folds, self.x, self.given_y, groups, seed=seed)
        if not self.plan.uses_indices:
            raise ValueError(
                f"The FoldPlan holds split strings ({self.plan.folds[0][1]!r}), which index a TFDS dataset, "
                "not the arrays given as `x` and `y`. Pass x=None to stream the plan's dataset."
            )
        self.batch_size = batch_size
        self.n_samples = len(self.x)
        self._tensors = None
        self.sample_weight = _check_sample_weight(sample_weight, self.n_samples)
        if class_weight is not None and not (class_weight == "balanced" or isinstance(class_weight, dict)):
            raise ValueError(
                f"Invalid value for argument `class_weight`. Received: class_weight={class_weight!r}. "
                "Expected None, 'balanced' or a dict {class: weight}."
            )
        if class_weight is not None and self.task() != "classification":
            raise ValueError("`class_weight` needs class labels; these targets are a regression.")
        self.class_weight = class_weight

    @property
    def weighted(self) -> bool:
        return self.sample_weight is not None or self.class_weight is not None

    def fold_weights(self, k):
        """Fold `k`'s per-sample weights over the whole data, for training
        and for validation, or `(None, None)`: `sample_weight` times the
        class weights, which `"balanced"` computes on the fold's training
        split only. Validation rows weigh their `sample_weight` only, as
        scikit-learn's `class_weight` acts on fitting only."""
        if not self.weighted:
            return None, None
        ones = np.ones(self.n_samples, dtype="float32")
        given = ones if self.sample_weight is None else self.sample_weight
        train = given.copy()
        if self.class_weight is not None:
            labels = class_labels(self.y)
            if self.class_weight == "balanced":
                from sklearn.utils.class_weight import compute_class_weight

                seen = labels[np.asarray(self.plan.folds[k][0]) if k is not None else slice(None)]
                classes = np.unique(seen)
                weights = dict(zip(classes.tolist(), compute_class_weight("balanced", classes=classes, y=seen)))
            else:
                names = self.class_names
                weights = {
                    (names.index(c) if names is not None and c in names else c): w for c, w in self.class_weight.items()
                }
            train = train * np.asarray([weights.get(c, 1.0) for c in labels.tolist()], dtype="float32")
        return train.astype("float32"), (None if self.sample_weight is None else given)
    def __getstate__(self):
        # Workers (n_jobs) rebuild the tensors from the arrays.
        return {**self.__dict__, "_tensors": None}

    def task(self) -> str:
        return "classification" if is_classification_target(self.y) else "regression"

    def fingerprint(self) -> dict:
        # A plan made from these arrays, or checked against them, carries
        # their fingerprint already: hashing them again costs about 0.1 s a
        # 100 MB.
        known = self.plan.fingerprint
        if known is not None and set(known) == {"n_samples", "x_shape", "x_dtype", "y_shape", "digest"}:
            return dict(known)
        return data_fingerprint(self.x, self.given_y)

    def view(self) -> DataView:
        """All of the data, for `tfcv._targets.check_against_model`."""
        return DataView(
            sample_shape=self.x.shape[1:], sample_text=self.x.dtype.kind in "USO", labels=self.y, where="y",
            complete=True, class_names=self.class_names,
        )

    # A fold's validation rows are kept in memory after the first epoch: a
    # new iterator over the gathering map costs about 8 ms every epoch (its
    # function is instantiated again), and the rows are the arrays' own, a
    # fold's share of what is in memory already. (Not for image files.)
    cache_validation = True

    def gather(self, indices, weights=None):
        """The `(x, y)` rows at `indices` (inside a tf.data pipeline), or
        `(x, y, sample_weight)` with `weights` (one per sample of the data)."""
        import tensorflow as tf

        if self._tensors is None:
            with tf.init_scope():  # eager tensors, shared by every pipeline
                self._tensors = (tf.constant(self.x), tf.constant(self.y))
        x, y = self._tensors
        if weights is None:
            return tf.gather(x, indices), tf.gather(y, indices)
        return tf.gather(x, indices), tf.gather(y, indices), tf.gather(weights, indices)

    def train_indices(self, k, seed):
        """Fold `k`'s training indices in batches, reshuffled with `seed` on
        every pass, repeating forever."""
        import tensorflow as tf

        train_idx = np.asarray(self.plan.folds[k][0])
        return (
            tf.data.Dataset.from_tensor_slices(train_idx)
            .shuffle(len(train_idx), seed=int(seed), reshuffle_each_iteration=True)
            .batch(self.batch_size)
            .repeat()
        )

    def everything(self, seed) -> _FoldData:
        """All rows as one training split (`fit(..., refit=True)`), weighted
        as a fold's training split is; no validation."""
        import tensorflow as tf

        weights = self.fold_weights(None)[0]
        weights = None if weights is None else tf.constant(weights)
        rows = np.arange(self.n_samples)
        train = (
            tf.data.Dataset.from_tensor_slices(rows).shuffle(len(rows), seed=int(seed), reshuffle_each_iteration=True)
            .batch(self.batch_size).repeat().map(without_autograph(lambda i: self.gather(i, weights)), num_parallel_calls=tf.data.AUTOTUNE)
        )
        return _FoldData(
            train=train.prefetch(tf.data.AUTOTUNE), steps=max(1, -(-len(rows) // self.batch_size)), validation=None,
            adapt_input=self.x, n_train=len(rows), n_val=0, val_labels=self.y[:0],
        )

    def fold(self, k, seed, *, pipelines=True) -> _FoldData:
        """Fold `k`'s data; with `pipelines=False` without its `train` and
        `validation` datasets (the stacked strategy builds its own)."""
        import tensorflow as tf

        train_idx, val_idx = self.plan.folds[k]
        train_w, val_w = self.fold_weights(k)
        train = validation = None
        if pipelines:
            train_t, val_t = (None if w is None else tf.constant(w) for w in (train_w, val_w))
            train = self.train_indices(k, seed).map(without_autograph(lambda i: self.gather(i, train_t)), num_parallel_calls=tf.data.AUTOTUNE)
            train = train.prefetch(tf.data.AUTOTUNE)
            validation = tf.data.Dataset.from_tensor_slices(np.asarray(val_idx)).batch(max(self.batch_size, 256))
            validation = validation.map(without_autograph(lambda i: self.gather(i, val_t)))
            if self.cache_validation:
                validation = validation.cache()
            validation = validation.prefetch(tf.data.AUTOTUNE)
        return _FoldData(
            train=train, steps=max(1, -(-len(train_idx) // self.batch_size)), validation=validation,
            adapt_input=lambda: self.x[train_idx], n_train=len(train_idx), n_val=len(val_idx),
            val_labels=self.y[val_idx],
            val_weights=None if val_w is None else val_w[val_idx],
            train_rows=lambda: (
                tf.data.Dataset.from_tensor_slices(np.asarray(train_idx)).batch(max(self.batch_size, 256))
                .map(without_autograph(lambda i: self.gather(i)[0])).prefetch(tf.data.AUTOTUNE), self.y[train_idx],
                None if val_w is None else val_w[train_idx],
            ),
        )


class _FileSource(_ArraySource):
    """Image files (`tfcv.sources.ImageFiles`) and their labels: the folds
    are made over the file list, and every batch is read and decoded inside
    `tf.data`, never the whole set at once."""

    cache_validation = False

    def __init__(self, folds, files, y, groups, **kwargs):
        super().__init__(folds, files.paths, y, groups, **kwargs)
        self.files = files

    def fingerprint(self) -> dict:
        return {**data_fingerprint(self.x, self.given_y), "files": self.files.fingerprint()}

    def view(self) -> DataView:
        return super().view()._replace(sample_shape=self.files.sample_shape, sample_text=False)

    def gather(self, indices, *args):
        paths, *rest = super().gather(indices, *args)
        return (self.files.decode_files(paths), *rest)

    def fold(self, k, seed, *, pipelines=True) -> _FoldData:
        import tensorflow as tf

        data = super().fold(k, seed, pipelines=pipelines)
        paths = tf.data.Dataset.from_tensor_slices(self.x[self.plan.folds[k][0]]).batch(64)
        data.adapt_input = lambda: paths.map(self.files.decode_files)
        return data


class _DatasetSource:
    """`tf.data` folds: a TFDS FoldPlan streamed from disk, or a callable
    `fold -> (train_ds, val_ds)` of batched datasets of `(x, y)`."""

    def __init__(self, folds, make_datasets, *, batch_size, pipeline):
        self.batch_size = batch_size
        self.pipeline = pipeline
        self.make_datasets = make_datasets
        # The out-of-fold array's size comes from the plan (see _out_of_fold).
        self.n_samples = None
        self._first = None
        if make_datasets is None:
            self.plan = folds
        else:
            if isinstance(folds, bool) or not isinstance(folds, (int, np.integer)):
                raise TypeError(
                    f"Invalid value for argument `folds`. Received: folds={folds!r}. With a callable "
                    "`fold -> (train_ds, val_ds)` as `x`, `folds` must be the number of folds (an int >= 2)."
                )
            name = getattr(make_datasets, "__qualname__", type(make_datasets).__name__)
            self.plan = FoldPlan(
                [(f"{name}({k}):train", f"{name}({k}):val") for k in range(int(folds))],
                splitter=f"callable {name}", source={"kind": "callable", "name": name},
            )

    def fingerprint(self) -> dict:
        return {"source": self.plan.source, "folds": [list(map(_describe, pair)) for pair in self.plan.folds]}

    def __getstate__(self):
        # Workers (n_jobs) stream their own folds.
        return {**self.__dict__, "_first": None}

    def first_fold(self) -> _FoldData:
        """Fold 0 (read once, unshuffled seed): what `task` and the checks
        against the model look at."""
        if self._first is None:
            self._first = self.fold(0, 0)
        return self._first

    def task(self) -> str:
        return "classification" if is_classification_target(self.first_fold().val_labels) else "regression"

    def view(self) -> DataView:
        """Fold 0's sample spec and validation labels, for
        `tfcv._targets.check_against_model`."""
        import tensorflow as tf

        data = self.first_fold()
        x_spec = data.train.element_spec[0]
        single = isinstance(x_spec, tf.TensorSpec) and x_spec.shape.rank is not None and x_spec.shape.rank >= 1
        return DataView(
            sample_shape=tuple(x_spec.shape)[1:] if single else None,
            sample_text=single and x_spec.dtype == tf.string,
            labels=data.val_labels, where="fold 0's validation labels", complete=False,
            class_names=(self.plan.source or {}).get("class_names"),
        )

    def fold(self, k, seed) -> _FoldData:
        if self.make_datasets is None:
            from tfcv import data as tfcv_data

            train_ds, val_ds = tfcv_data.fold_datasets(
                self.plan, k, batch_size=self.batch_size, seed=int(seed), pipeline=self.pipeline
            )
        else:
            datasets = self.make_datasets(k)
            if not (isinstance(datasets, tuple) and len(datasets) == 2):
                raise TypeError(
                    f"The callable passed as `x` must return a (train_ds, val_ds) pair of tf.data.Dataset. "
                    f"Received for fold {k}: {type(datasets).__name__}."
                )
            train_ds, val_ds = datasets
        import tensorflow as tf

        for name, ds in (("train_ds", train_ds), ("val_ds", val_ds)):
            if not isinstance(ds, tf.data.Dataset):
                raise TypeError(f"Fold {k}: `{name}` must be a tf.data.Dataset of (x, y) batches. Received: {type(ds).__name__}.")
            check_element(ds.element_spec, k, name)
        if int(train_ds.cardinality()) == int(tf.data.INFINITE_CARDINALITY):
            raise ValueError(
                f"Fold {k}: `train_ds` repeats forever. An epoch is one pass over a fold's training data, which "
                "tfcv repeats itself (so that a resumed fold continues the batches of an uninterrupted run): "
                "remove the `.repeat()`."
            )
        val_labels = np.concatenate([
            np.asarray(batch) for batch in val_ds.map(lambda *element: element[1]).as_numpy_iterator()
        ])
        check_fold_labels(val_labels, k)
        return _FoldData(
            train=train_ds, steps=None, validation=val_ds,
            adapt_input=train_ds.map(lambda *element: element[0]),
            n_train=None, n_val=len(val_labels), val_labels=val_labels,
        )


def batches_per_pass(dataset, k) -> int:
    """Batches in one pass over fold `k`'s finite training `dataset` (its
    cardinality, or one counting pass when that is unknown)."""
    import tensorflow as tf

    count = int(dataset.cardinality())
    if count == int(tf.data.UNKNOWN_CARDINALITY):
        # (after `filter`, ...) One counting pass: it is the first pass begun
        # on the dataset after adaptation, in every run alike.
        count = int(dataset.reduce(np.int64(0), lambda n, _: n + 1))
    if count == 0:
        raise ValueError(f"Fold {k}: `train_ds` is empty. Expected at least one batch of (x, y) to train on.")
    return count


def _check_sample_weight(sample_weight, n_samples):
    if sample_weight is None:
        return None
    weights = np.asarray(sample_weight)
    if weights.dtype.kind not in "biuf" or weights.shape != (n_samples,) or not np.all(np.isfinite(weights)) \
            or np.any(weights < 0):
        raise ValueError(
            f"Invalid value for argument `sample_weight`. Received: an array of shape {weights.shape} and dtype "
            f"{weights.dtype}. Expected {n_samples} finite non-negative numbers, one per sample."
        )
    return weights.astype("float32")


def _describe(part):
    return part if isinstance(part, str) else f"{len(part)} indices"
