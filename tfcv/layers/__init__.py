"""Keras layers shipped by tfcv (registered for `keras.saving`)."""

from tfcv.layers.ensemble import FoldVote

__all__ = ["FoldVote"]
