"""Keras layers shipped by tfcv (registered for `keras.saving`)."""

from tfcv.layers.augmentation import AUGMENTATIONS, Augmentation
from tfcv.layers.ensemble import FoldVote
from tfcv.layers.gradient_gate import GradientGate
from tfcv.layers.mixing import BatchMixer
from tfcv.layers.random_resized_crop import RandomResizedCrop
from tfcv.layers.randomized import randomized_inference

__all__ = [
    "AUGMENTATIONS",
    "Augmentation",
    "BatchMixer",
    "FoldVote",
    "GradientGate",
    "RandomResizedCrop",
    "randomized_inference",
]
