"""The stacked strategy's data: every fold's batches zipped into one.

Each element of a stacked dataset is a tuple with one batch per fold, drawn
from that fold's own training (or validation) rows only; `tfcv._stacked`
feeds them to the copies side by side.
"""

from __future__ import annotations

import math

import numpy as np

from tfcv._fold_sources import batches_per_pass, without_autograph


def array_datasets(source, folds, seeds, *, val_batch_size, mixers, initial_epoch=0):
    """Stacked training and validation datasets of in-memory arrays (a
    `crossval._ArraySource`).

    Every copy draws its batches from its own fold's training indices,
    reshuffled each pass with the fold's seed; an epoch is as many steps as
    the largest training split needs, so a copy whose split is smaller starts
    its next pass a little early. Validation gives every copy the same number
    of batches over its whole held-out split.

    Returns:
        `(train_ds, steps_per_epoch, val_ds)`.
    """
    import tensorflow as tf

    steps = max(math.ceil(len(source.plan.folds[k][0]) / source.batch_size) for k in folds)
    streams = [source.train_indices(k, seeds[k]) for k in folds]

    weights = [[None if w is None else tf.constant(w) for w in source.fold_weights(k)] for k in folds]

    def gather(which):
        @without_autograph
        def gather_rows(*indices):
            parts = [source.gather(i, w[which]) for i, w in zip(indices, weights)]
            return tuple(tuple(p[j] for p in parts) for j in range(len(parts[0])))
        return gather_rows

    train = tf.data.Dataset.zip(tuple(streams)).map(gather(0), num_parallel_calls=tf.data.AUTOTUNE)
    # A resumed run skips the epochs done after mixing, so that the mixers
    # have drawn for those batches as in an uninterrupted run.
    train = _mixed(train, mixers).skip(initial_epoch * steps).prefetch(tf.data.AUTOTUNE)

    vals = [np.asarray(source.plan.folds[k][1]) for k in folds]
    n_batches = max(math.ceil(len(v) / val_batch_size) for v in vals)
    parts = []
    for v in vals:
        chunks = np.array_split(v, n_batches)
        ragged = tf.RaggedTensor.from_row_lengths(np.concatenate(chunks), [len(c) for c in chunks])
        parts.append(tf.data.Dataset.from_tensor_slices(ragged))
    # One batch ahead: the validation iterator is kept through training (see
    # tfcv._stacked._StackedFolds._validation_pass), and so would a deeper buffer be.
    val = tf.data.Dataset.zip(tuple(parts)).map(gather(1)).prefetch(1)
    return train, steps, val


def stream_datasets(fold_data, folds, *, mixers, val_batch_size, initial_epoch=0):
    """Stacked datasets from per-fold batched `tf.data` pipelines (TFDS plans
    and `fold -> (train_ds, val_ds)` callables)."""
    import tensorflow as tf

    # (A training dataset that repeats forever was refused when its fold was read.)
    counts = [batches_per_pass(data.train, k) for k, data in zip(folds, fold_data)]
    steps = max(counts)
    streams = [data.train.repeat() for data in fold_data]
    train = tf.data.Dataset.zip(tuple(streams)).map(
        lambda *elements: (tuple(e[0] for e in elements), tuple(e[1] for e in elements)),
        num_parallel_calls=tf.data.AUTOTUNE,
    )
    train = _mixed(train, mixers).skip(initial_epoch * steps).prefetch(tf.data.AUTOTUNE)

    n_batches = max(math.ceil(data.n_val / val_batch_size) for data in fold_data)
    parts = []
    for data in fold_data:
        size = max(1, math.ceil(data.n_val / n_batches))
        rows = data.validation.unbatch()
        part = rows.batch(size)
        missing = n_batches - math.ceil(data.n_val / size)
        if missing > 0:
            # Zip stops at the shortest part: pad with empty batches.
            empty = tf.nest.map_structure(
                lambda spec: tf.zeros([0] + [d if d is not None else 1 for d in spec.shape], spec.dtype),
                rows.element_spec,
            )
            part = part.concatenate(tf.data.Dataset.from_tensors(empty).repeat(missing))
        parts.append(part)
    val = tf.data.Dataset.zip(tuple(parts)).map(
        lambda *elements: (tuple(e[0] for e in elements), tuple(e[1] for e in elements))
    )
    # Unbatching loses the length; Keras would warn that validation "ran out of data".
    val = val.apply(tf.data.experimental.assert_cardinality(n_batches)).prefetch(1)
    return train, steps, val


def _mixed(train, mixers):
    if not any(m is not None for m in mixers):
        return train
    import tensorflow as tf

    def mix(xs, ys, *rest):
        pairs = [m(x, y) if m is not None else (x, y) for m, x, y in zip(mixers, xs, ys)]
        return (tuple(p[0] for p in pairs), tuple(p[1] for p in pairs), *rest)

    return train.map(mix, num_parallel_calls=tf.data.AUTOTUNE)
