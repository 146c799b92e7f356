"""The offline digits TFDS dataset: `DigitsBuilder` and `prepare_digits`.

scikit-learn's embedded digits as a real TensorFlow Datasets dataset,
registered as `"tfcv_digits"` when this module is imported, so the whole
TFDS path (`tfcv.data.tfds_folds`, `fold_datasets`) runs without a network.
Public as `tfcv.data.DigitsBuilder`, `tfcv.data.prepare_digits` and
`tfcv.data.DIGITS_NAME`; importing `tfcv.data` registers the dataset.
"""

from __future__ import annotations

import os

import numpy as np
import tensorflow_datasets as tfds

__all__ = ["DIGITS_NAME", "DigitsBuilder", "prepare_digits"]

DIGITS_NAME = "tfcv_digits"


class DigitsBuilder(tfds.core.GeneratorBasedBuilder):
    """scikit-learn's embedded 8x8 digits as a TFDS dataset, prepared offline.

    The 1,797 images ship inside scikit-learn, so `download_and_prepare`
    needs no network. Once `tfcv.data` is imported the dataset is registered
    as `"tfcv_digits"` and loads like any catalogue dataset.

    Features: `image`, `uint8` of shape `(8, 8, 1)` holding the original
    intensities `0`-`16` (not `0`-`255`: rescale with `1/16` to get the
    `[0, 1]` floats of `tfcv.datasets.load_digits`), and `label`, a
    `ClassLabel` `0`-`9`. Supervised keys `("image", "label")`. One `train`
    split of 1,797 examples, stored in scikit-learn's order (the dataset
    disables TFDS' shuffling, so position `i` is `load_digits()[i]`).

    Example:

    >>> tfcv.data.DigitsBuilder(data_dir=data_dir).download_and_prepare()
    >>> ds = tfds.load("tfcv_digits", split="train", data_dir=data_dir, as_supervised=True)
    """

    name = DIGITS_NAME
    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "scikit-learn's digits, 8x8x1 uint8 in [0, 16], sklearn order."}

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description=(
                "Optical recognition of handwritten digits (UCI), as bundled with scikit-learn: "
                "1,797 grey 8x8 images with intensities 0-16, labels 0-9."
            ),
            features=tfds.features.FeaturesDict({
                "image": tfds.features.Image(shape=(8, 8, 1), dtype=np.uint8),
                "label": tfds.features.ClassLabel(num_classes=10),
            }),
            supervised_keys=("image", "label"),
            homepage="https://scikit-learn.org/stable/datasets/toy_dataset.html#optical-recognition-of-handwritten-digits-dataset",
            disable_shuffling=True,
        )

    def _split_generators(self, dl_manager):
        del dl_manager  # Nothing to download: the data ships with scikit-learn.
        return {"train": self._generate_examples()}

    def _generate_examples(self):
        from sklearn.datasets import load_digits

        bunch = load_digits()
        images = bunch.images.astype("uint8")[..., np.newaxis]
        for i, (image, label) in enumerate(zip(images, bunch.target, strict=True)):
            yield i, {"image": image, "label": int(label)}


def prepare_digits(data_dir: str | os.PathLike) -> str:
    """Prepares the `tfcv_digits` TFDS dataset in `data_dir` (offline).

    TFDS writes into a temporary directory and renames it when complete, and
    does nothing if the dataset is already there.

    Args:
        data_dir: Directory of TFDS datasets (created if missing).

    Returns:
        `data_dir` as an absolute path, ready for
        `tfds_folds("tfcv_digits", data_dir=data_dir)`.

    Example:

    >>> data_dir = tfcv.data.prepare_digits("/tmp/tfds")
    >>> plan = tfcv.data.tfds_folds("tfcv_digits", k=5, data_dir=data_dir)
    """
    data_dir = os.path.abspath(os.path.expanduser(os.fspath(data_dir)))
    os.makedirs(data_dir, exist_ok=True)
    DigitsBuilder(data_dir=data_dir).download_and_prepare()
    return data_dir
