"""Layers that combine the outputs of fold models."""

from __future__ import annotations

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="tfcv")
class FoldVote(keras.layers.Layer):
    """Majority vote of several classifiers' outputs.

    Takes a list of `(batch, num_classes)` outputs (probabilities or logits)
    and returns, for each class, the fraction of inputs whose argmax is that
    class. The argmax of the result is the majority class; ties go to the
    lowest class index.

    Input shape:
        A list of tensors of shape `(batch, num_classes)`.

    Output shape:
        `(batch, num_classes)`, rows summing to 1.
    """

    def call(self, inputs):
        num_classes = inputs[0].shape[-1]
        votes = [ops.one_hot(ops.argmax(x, axis=-1), num_classes, dtype=self.compute_dtype) for x in inputs]
        return ops.mean(ops.stack(votes, axis=0), axis=0)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[0])
