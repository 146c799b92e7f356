"""Keras layers shipped by tfcv (registered for `keras.saving`)."""

from tfcv.layers.augmentation import AUGMENTATIONS, Augmentation
from tfcv.layers.ensemble import FoldVote
from tfcv.layers.mixing import BatchMixer
from tfcv.layers.random_resized_crop import RandomResizedCrop
from tfcv.layers.randomized import randomized_inference

__all__ = [
    "AUGMENTATIONS",
    "Augmentation",
    "BatchMixer",
    "FoldVote",
    "RandomResizedCrop",
    "randomized_inference",
]
