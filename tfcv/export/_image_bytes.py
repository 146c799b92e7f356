"""Signatures that take encoded images: `serving_bytes`, `predict_folds_bytes`,
`predict_randomized_bytes` (and the twin of every other signature).

Their one input, `image_bytes`, is a batch of encoded images (`DT_STRING`:
JPEG, PNG, GIF's first frame, BMP; base64 over REST, as TF Serving expects).
Each is decoded, resized to the model's input size and scaled to the input
range inside the graph with `tfcv.sources.decode_image`, the function image
folders are read with for training, then goes through the float-input twin,
so both return the same outputs for the same pixels.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from tfcv.bundle import SERVING_DEFAULT
from tfcv.sources import decode_image

__all__ = ["IMAGE_BYTES", "ImageBytes", "bytes_signature_name"]

IMAGE_BYTES = "image_bytes"


def bytes_signature_name(name: str) -> str:
    """`serving_default` -> `serving_bytes`, `predict_folds` -> `predict_folds_bytes`."""
    return "serving_bytes" if name == SERVING_DEFAULT else f"{name}_bytes"


class ImageBytes:
    """The encoded-image twins of an export's signatures.

    Args:
        plan: The `_ExportPlan`; its input must be a batch of images
            `(None, height, width, channels)` with 1 or 3 channels.
    """

    def __init__(self, plan):
        shape = plan.input_shape
        if len(shape) != 4 or None in shape[1:] or shape[-1] not in (1, 3) or plan.input_dtype == tf.string:
            raise ValueError(
                f"Invalid value for argument `image_bytes`. Received: image_bytes=True for a model taking inputs "
                f"of shape {shape} and dtype {plan.input_dtype.name}. Expected a model taking images "
                "(batch, height, width, 1 or 3 channels)."
            )
        self.plan = plan
        self.image_size = (int(shape[1]), int(shape[2]))
        self.channels = int(shape[3])
        self.spec = tf.TensorSpec([None], tf.string, name=IMAGE_BYTES)

    def decode(self, image_bytes):
        plan = self.plan
        low, high = plan.input_range
        images = tf.map_fn(
            lambda contents: decode_image(contents, image_size=self.image_size, channels=self.channels,
                                          value_range=(low, high)),
            image_bytes, fn_output_signature=tf.TensorSpec((*self.image_size, self.channels), tf.float32),
        )
        if plan.input_dtype.is_integer:
            images = tf.round(images)
        return tf.cast(images, plan.input_dtype)

    def endpoints(self, float_endpoints: dict) -> dict:
        return {
            bytes_signature_name(name): (lambda image_bytes, fn=fn: fn(self.decode(image_bytes)), self.spec)
            for name, (fn, _) in float_endpoints.items()
        }

    def random_inputs(self, batch_size: int) -> np.ndarray:
        """PNG files of random images in the input range, for warmup records."""
        low, high = self.plan.input_range
        images = self.plan.random_inputs(batch_size).astype("float64")
        pixels = np.clip(np.round((images - low) * (255.0 / max(high - low, 1e-12))), 0, 255).astype("uint8")
        return np.asarray([tf.io.encode_png(p).numpy() for p in pixels], dtype=object)
