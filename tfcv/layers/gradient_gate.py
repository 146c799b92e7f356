"""`GradientGate`: the identity forward, gradients let through or stopped."""

from __future__ import annotations

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="tfcv")
class GradientGate(keras.layers.Layer):
    """Passes its input through unchanged; gradients flow back only while
    the gate is open.

    Placed after a pretrained backbone, a closed gate freezes everything
    before it (no gradient reaches those weights, so no optimizer moves
    them) without changing `trainable`, which would need a new optimizer
    and a new traced train step. `tfcv.builder.FineTuning` opens it when
    phase 2 of fine-tuning begins; its state is a weight, so a resumed run
    comes back in the right phase.

    Args:
        open: `bool`. Whether gradients flow at first. Defaults to `False`.
        **kwargs: Base layer keyword arguments.

    Input shape:
        Any.

    Output shape:
        Same as the input.
    """

    def __init__(self, open: bool = False, **kwargs):  # noqa: A002 - the gate's state, as in the spec
        super().__init__(**kwargs)
        self.initially_open = bool(open)

    def build(self, input_shape):
        self.gate = self.add_weight(
            shape=(), initializer=keras.initializers.Constant(float(self.initially_open)), trainable=False,
            name="gate",
        )

    def call(self, inputs):
        gate = ops.cast(self.gate, inputs.dtype)
        return gate * inputs + (1.0 - gate) * ops.stop_gradient(inputs)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "open": self.initially_open}
