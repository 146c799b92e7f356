"""Your own data, into folds: image folders, NPZ and CSV files, TFDS names.

Each reader returns a `Data`: the `x`, `y` (and `groups`) that
`CrossValidator.fit` takes, or a TFDS `FoldPlan` with `x=None`, plus what the
model needs to know (`input_shape`, `num_classes`, `class_names`, `kind`).

An image folder is never loaded whole. `image_directory` lists the files
(one subfolder per class) and returns an `ImageFiles` as `x`: the folds are
made over the file list and the labels (stratified, nothing decoded), and
each fold reads, decodes and resizes its batches inside `tf.data` with
`decode_image`, the same function the exported `image_bytes` signatures run
in-graph. Labels are the folder names, so they become `class_names` in the
run and in the exported bundle.

`load_data` reads the `data:` section of a `tfcv run` YAML file (or the
`--data` flag, parsed by `parse_data`).
"""

from __future__ import annotations

import csv
import io
import os
import re
import zipfile
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np

from tfcv import _checks

__all__ = [
    "IMAGE_EXTENSIONS",
    "Data",
    "ImageFiles",
    "decode_image",
    "image_directory",
    "load_data",
    "parse_data",
    "read_csv",
    "read_npz",
    "read_tfds",
]

IMAGE_EXTENSIONS = (".bmp", ".gif", ".jpeg", ".jpg", ".png")
DEFAULT_IMAGE_SIZE = (64, 64)
# What `tf.io.decode_image` reads, by the first bytes of the file.
_SIGNATURES = (b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"GIF87a", b"GIF89a", b"BM")
# A PNG ends with its IEND chunk (length 0, type, CRC).
_PNG_END = b"\x00\x00\x00\x00IEND\xaeB`\x82"
_DATA_KEYS = {
    "directory": ("directory", "image_size", "channels"),
    "npz": ("npz",),
    "csv": ("csv", "text_column", "label_column"),
    "tfds": ("tfds", "split", "data_dir", "image_size", "download", "image_key", "label_key"),
}


class Data(NamedTuple):
    """Data read by `load_data`, ready for `CrossValidator.fit`.

    `x`, `y`, `groups` go to `fit` (`x` and `y` are `None` for a TFDS plan,
    which is then `folds`); `input_shape` and `num_classes` fill in a model
    spec; `kind` is `"image"`, `"text"` or `"array"`; `pipeline` is the
    `tfcv.data.Pipeline` of a TFDS plan.
    """

    x: Any
    y: Any
    groups: Any
    folds: Any
    input_shape: tuple
    num_classes: int | None
    class_names: list[str] | None
    kind: str
    description: str
    pipeline: Any = None


class ImageFiles:
    """Image files as `x`: decoded, resized and scaled to `[0, 1]` per batch,
    inside `tf.data`, never all at once.

    Args:
        paths: Sequence of image file paths (PNG, JPEG, GIF, BMP).
        image_size: `(height, width)` every image is resized to (bilinear).
        channels: `int`. `1` (grey) or `3` (RGB). Defaults to `3`.

    Example:

    >>> x, y = tfcv.sources.image_directory("photos", image_size=(96, 96))[:2]
    >>> result = tfcv.CrossValidator(build_fn, folds=5).fit(x, y)
    """

    def __init__(self, paths: Sequence[str], *, image_size: Sequence[int], channels: int = 3):
        self.paths = np.asarray([os.fspath(p) for p in paths], dtype=str)
        self.image_size = _image_size(image_size)
        self.channels = _checks.check_choice("channels", channels, (1, 3))

    def __len__(self) -> int:
        return len(self.paths)

    def __repr__(self) -> str:
        return f"ImageFiles({len(self)} files, image_size={self.image_size}, channels={self.channels})"

    @property
    def sample_shape(self) -> tuple[int, int, int]:
        return (*self.image_size, self.channels)

    def decode_files(self, paths):
        """A batch of paths (a `tf.string` tensor) as a float32 image batch."""
        import tensorflow as tf

        return tf.map_fn(
            lambda path: decode_image(tf.io.read_file(path), image_size=self.image_size, channels=self.channels),
            paths, fn_output_signature=tf.TensorSpec(self.sample_shape, tf.float32),
        )

    def fingerprint(self) -> dict:
        return {"kind": "image_files", "image_size": list(self.image_size), "channels": self.channels}


def decode_image(contents, *, image_size: Sequence[int], channels: int = 3, value_range=(0.0, 1.0)):
    """One encoded image (PNG, JPEG, GIF's first frame, BMP) as float32
    `(height, width, channels)` scaled to `value_range`: how image folders
    are read for training and how `image_bytes` signatures read requests.
    """
    import tensorflow as tf

    if channels == 1:
        # TensorFlow's GIF and BMP decoders only make colour images: those are decoded in colour
        # and made grey; PNG and JPEG keep their own decoders' grey.
        image = tf.cond(
            tf.logical_or(tf.io.is_jpeg(contents), tf.strings.substr(contents, 0, 8) == _SIGNATURES[0]),
            lambda: tf.io.decode_image(contents, channels=1, expand_animations=False),
            lambda: tf.image.rgb_to_grayscale(tf.io.decode_image(contents, channels=3, expand_animations=False)),
        )
    else:
        image = tf.io.decode_image(contents, channels=channels, expand_animations=False)
    image = tf.image.resize(tf.cast(image, tf.float32), tuple(image_size))
    low, high = float(value_range[0]), float(value_range[1])
    image = image * ((high - low) / 255.0) + low
    return tf.ensure_shape(image, (*image_size, channels))


def image_directory(
    directory: str | os.PathLike, *, image_size: Sequence[int] = DEFAULT_IMAGE_SIZE, channels: int = 3,
) -> Data:
    """An image folder with one subfolder per class, as `Data`.

    Files are checked by their first bytes (PNG, JPEG, GIF or BMP), not
    decoded; other files with an image extension are refused by name.

    Args:
        directory: Folder holding one subfolder per class.
        image_size: `(height, width)` to resize to. Defaults to `(64, 64)`.
        channels: `1` or `3`. Defaults to `3`.

    Returns:
        A `Data` whose `x` is an `ImageFiles` and `y` the class (folder)
        name of every file.
    """
    directory = os.fspath(directory)
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"Image directory {directory!r} does not exist (or is not a directory).")
    classes = sorted(d for d in os.listdir(directory) if os.path.isdir(os.path.join(directory, d)) and not d.startswith("."))
    if len(classes) < 2:
        raise ValueError(
            f"Image directory {directory!r} has {len(classes)} class subfolder(s) {classes}. Expected one "
            "subfolder per class, at least two."
        )
    paths, labels = [], []
    for name in classes:
        folder = os.path.join(directory, name)
        files = sorted(
            os.path.join(root, f) for root, _, names in os.walk(folder) for f in names
            if f.lower().endswith(IMAGE_EXTENSIONS) and not f.startswith(".")
        )
        if not files:
            raise ValueError(
                f"Class folder {folder!r} holds no images (expected files ending in {', '.join(IMAGE_EXTENSIONS)})."
            )
        for path in files:
            _check_image_file(path)
        paths += files
        labels += [name] * len(files)
    x = ImageFiles(paths, image_size=image_size, channels=channels)
    return Data(
        x=x, y=np.asarray(labels), groups=None, folds=None, input_shape=x.sample_shape,
        num_classes=len(classes), class_names=classes, kind="image",
        description=f"{len(paths)} images of {len(classes)} classes in {directory}, resized to "
                    f"{x.image_size[0]}x{x.image_size[1]}",
    )


def _check_image_file(path: str) -> None:
    """Refuses a file whose first bytes are not an image, or whose last
    bytes are not where its format ends one (a truncated download or copy);
    only the latter, which valid files with trailing data also are, is
    decoded to decide."""
    with open(path, "rb") as f:
        head = f.read(8)
        if not head.startswith(_SIGNATURES):
            raise ValueError(f"Corrupt or unsupported image file {path!r}: not a PNG, JPEG, GIF or BMP file.")
        size = f.seek(0, os.SEEK_END)
        f.seek(max(size - len(_PNG_END), 0))
        tail = f.read()
    if head.startswith(b"BM"):
        # The BMP header holds the file size.
        complete = int.from_bytes(head[2:6], "little") == size
    elif head.startswith(b"\x89PNG"):
        complete = tail.endswith(_PNG_END)
    elif head.startswith(b"GIF"):
        complete = tail.endswith(b";")
    else:
        complete = tail.rstrip(b"\x00\r\n").endswith(b"\xff\xd9")
    if complete:
        return
    import tensorflow as tf

    try:
        tf.io.decode_image(tf.io.read_file(path), expand_animations=False)
    except tf.errors.InvalidArgumentError as error:
        # TensorFlow prefixes the op's message with the function node that ran it.
        reason = re.sub(r"^\{\{.*?\}\}\s*", "", error.message.strip().splitlines()[0])
        raise ValueError(
            f"Corrupt image file {path!r}: truncated or damaged ({size} bytes; TensorFlow cannot "
            f"decode it: {reason})."
        ) from None


def read_npz(path: str | os.PathLike) -> Data:
    """A `.npz` file holding `x` and `y` (and optionally `groups`), as `Data`."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"NPZ file {path!r} does not exist.")
    with open(path, "rb") as f:
        # Without the zip signature NumPy would read the file as a lone .npy
        # array or report it as pickled data.
        if f.read(2) != b"PK":
            raise ValueError(f"NPZ file {path!r} is not an .npz archive (one written by np.savez(path, x=x, y=y)).")
    try:
        with np.load(path, allow_pickle=False) as archive:
            names = sorted(archive.files)
            arrays = {k: archive[k] for k in ("x", "y", "groups") if k in names}
    except (OSError, EOFError, zipfile.BadZipFile, ValueError) as error:
        raise ValueError(
            f"NPZ file {path!r} is truncated or corrupt, or holds arrays tfcv cannot read without pickle ({error})."
        ) from None
    if "x" not in arrays or "y" not in arrays:
        raise ValueError(f"NPZ file {path!r} has arrays {names}; expected 'x' and 'y' (and optionally 'groups').")
    x, y, groups = arrays["x"], arrays["y"], arrays.get("groups")
    for name, array in (("x", x), ("y", y)):
        if array.ndim == 0:
            raise ValueError(f"NPZ file {path!r}: `{name}` is a scalar; expected one row per sample.")
    kind = "text" if x.dtype.kind in "US" else ("image" if x.ndim == 4 else "array")
    names = sorted(str(v) for v in np.unique(y)) if y.dtype.kind in "US" else None
    n_classes = len(np.unique(y)) if y.dtype.kind in "USbiu" else None
    return Data(x=x, y=y, groups=groups, folds=None, input_shape=tuple(x.shape[1:]), num_classes=n_classes,
                class_names=names, kind=kind, description=f"{len(x)} samples of shape {x.shape[1:]} from {path}")


def read_csv(path: str | os.PathLike, *, text_column: str, label_column: str) -> Data:
    """A CSV file of sentences and labels (with a header row), as `Data`."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"CSV file {path!r} does not exist.")
    with open(path, "rb") as f:
        content = f.read()
    # utf-8-sig: spreadsheet programs start a UTF-8 CSV with a byte-order mark, which would
    # otherwise become part of the first column's name.
    text = _checks.decode_utf8(content, f"CSV file {path!r}", encoding="utf-8-sig",
                               hint=" Save it as UTF-8 (CSV UTF-8 in a spreadsheet program).")
    reader = csv.DictReader(io.StringIO(text, newline=""))
    columns = reader.fieldnames or []
    for arg, column in (("text_column", text_column), ("label_column", label_column)):
        if column not in columns:
            raise ValueError(
                f"Invalid value for argument `{arg}`. Received: {arg}={column!r}. CSV file {path!r} has "
                f"columns {columns}."
            )
    rows = []
    for row in reader:
        if not row[label_column]:
            # A short row's missing field is None, which would become a class named 'None'.
            raise ValueError(
                f"CSV file {path!r} has no label on line {reader.line_num} (column {label_column!r} is "
                f"{'empty' if row[label_column] == '' else 'missing'}). Expected a label on every row."
            )
        rows.append((row[text_column], row[label_column]))
    if not rows:
        raise ValueError(f"CSV file {path!r} has no rows.")
    x = np.asarray([r[0] or "" for r in rows], dtype=object).astype(str)
    y = np.asarray([r[1] for r in rows], dtype=str)
    names = sorted(set(y.tolist()))
    return Data(x=x, y=y, groups=None, folds=None, input_shape=(), num_classes=len(names), class_names=names,
                kind="text", description=f"{len(x)} sentences of {len(names)} classes from {path}")


def read_tfds(name: str, *, folds: int, seed: int = 0, split: str = "train", data_dir: str | None = None,
              image_size: Sequence[int] | None = None, download: bool = True, image_key: str | None = None,
              label_key: str | None = None) -> Data:
    """A TFDS dataset as a stratified `tfcv.data.tfds_folds` plan, as `Data`.

    An image feature is resized to `image_size` (when given) and scaled to
    `[0, 1]`; class names are the dataset's `ClassLabel` names.

    `image_key` and `label_key` name the features to read as `(x, y)` (the
    input need not be an image) for a dataset without supervised keys, or
    instead of its own; given one, the other defaults to the dataset's.
    """
    import tensorflow_datasets as tfds

    from tfcv import data as tfcv_data

    # Checked first: a truthy string such as 'no' would let TFDS download.
    download = _checks.check_bool("download", download)
    data_dir = os.path.abspath(os.path.expanduser(data_dir)) if data_dir else None
    try:
        builder = tfds.builder(name, data_dir=data_dir)
    except Exception as error:  # noqa: BLE001 - TFDS raises several unrelated types for a bad name
        raise ValueError(f"Unknown TFDS dataset {name!r} ({_first_line(error)}).") from None
    if not os.path.isdir(builder.data_dir) or not os.listdir(builder.data_dir):
        where = data_dir or "the default data_dir (~/tensorflow_datasets)"
        if not download:
            raise ValueError(f"TFDS dataset {name!r} is not prepared in {where}; run `tfds build {name}` first.")
        try:
            builder.download_and_prepare()
        except Exception as error:  # noqa: BLE001 - network, permission and format errors alike
            raise ValueError(
                f"TFDS dataset {name!r} is not prepared in {where} and could not be downloaded "
                f"({_first_line(error)}); run `tfds build {name}` where there is a network."
            ) from None
    kwargs = {"data_dir": data_dir} if data_dir else {}
    info = builder.info
    keys = None
    if image_key is not None or label_key is not None:
        own = tuple(info.supervised_keys or ())[:2]
        keys = (image_key or (own[0] if own else None), label_key or (own[1] if own else None))
        if None in keys:
            missing = "label_key" if keys[1] is None else "image_key"
            raise ValueError(
                f"TFDS dataset {name!r} has no supervised keys; `data: tfds` needs `{missing}` too (the feature "
                f"holding the {'labels' if missing == 'label_key' else 'inputs'}), one of "
                f"{sorted(info.features.keys())}."
            )
    plan = tfcv_data.tfds_folds(name, folds, split, stratify=True, seed=seed, supervised_keys=keys, **kwargs)
    x_key, y_key = keys or info.supervised_keys[:2]
    feature, label = info.features[x_key], info.features[y_key]
    class_names = list(label.names) if isinstance(label, tfds.features.ClassLabel) else None
    shape = tuple(feature.shape)
    pipeline, kind = None, "array"
    if isinstance(feature, tfds.features.Image):
        kind = "image"
        size = _image_size(image_size) if image_size is not None else tuple(shape[:2])
        if None in size:
            raise ValueError(f"TFDS dataset {name!r} has images of varying size; pass image_size (--image-size H W).")
        shape = (*size, shape[2])
        pipeline = tfcv_data.Pipeline(image_size=size if image_size is not None else None, rescale=1 / 255,
                                      dtype="float32")
    elif isinstance(feature, tfds.features.Text):
        kind = "text"
    plan.source["class_names"] = class_names
    return Data(x=None, y=None, groups=None, folds=plan, input_shape=shape,
                num_classes=len(class_names) if class_names else None, class_names=class_names, kind=kind,
                description=f"TFDS {name}[{split}]", pipeline=pipeline)


def parse_data(value: str | Mapping[str, Any], **options: Any) -> dict:
    """The `data:` section (or the `--data` flag) as a mapping with one
    source key (`directory`, `npz`, `csv` or `tfds`).

    A string is read as `tfds:NAME[:SPLIT]`, a `.npz` or `.csv` file, or a
    directory; `options` (`image_size`, `text_column`, ...) that are not
    `None` are added.
    """
    if isinstance(value, Mapping):
        config = {str(k).replace("-", "_"): v for k, v in value.items()}
    elif isinstance(value, (str, os.PathLike)):
        value = os.fspath(value)
        if value.startswith("tfds:"):
            name, _, split = value[len("tfds:"):].partition(":")
            config = {"tfds": name, **({"split": split} if split else {})}
        elif value.lower().endswith(".npz"):
            config = {"npz": value}
        elif value.lower().endswith(".csv"):
            config = {"csv": value}
        else:
            config = {"directory": value}
    else:
        raise _checks.invalid_argument(
            "data", value, "a path (image folder, .npz, .csv), 'tfds:NAME[:SPLIT]' or a mapping", TypeError
        )
    config.update({k: v for k, v in options.items() if v is not None})
    kinds = [k for k in _DATA_KEYS if k in config]
    if len(kinds) != 1:
        raise ValueError(
            f"Invalid value for `data`. Received: {dict(config)!r}. Expected exactly one of the keys "
            f"{list(_DATA_KEYS)}."
        )
    unknown = sorted(set(config) - set(_DATA_KEYS[kinds[0]]))
    if unknown:
        raise ValueError(
            f"Invalid keys {unknown} in `data` with {kinds[0]!r}. Accepted keys: {list(_DATA_KEYS[kinds[0]])}."
        )
    return config


def load_data(config: str | Mapping[str, Any], *, folds: int = 5, seed: int = 0) -> Data:
    """Reads the data a `data:` section (see `parse_data`) points at.

    Example:

    >>> data = tfcv.sources.load_data({"directory": "photos", "image_size": [96, 96]})
    >>> result = tfcv.CrossValidator(build_fn, folds=5).fit(data.x, data.y)
    """
    config = parse_data(config)
    if "directory" in config:
        if not os.path.exists(config["directory"]):
            raise FileNotFoundError(
                f"Data path {config['directory']!r} does not exist. Expected an image folder (one subfolder per "
                "class), a .npz or .csv file, or 'tfds:NAME[:SPLIT]'."
            )
        return image_directory(config["directory"], image_size=config.get("image_size", DEFAULT_IMAGE_SIZE),
                               channels=config.get("channels", 3))
    if "npz" in config:
        return read_npz(config["npz"])
    if "csv" in config:
        for key in ("text_column", "label_column"):
            if key not in config:
                raise ValueError(
                    f"`data: csv` needs `{key}` (--{key.replace('_', '-')} on the command line): the column "
                    f"holding the {'sentences' if key == 'text_column' else 'labels'}."
                )
        return read_csv(config["csv"], text_column=config["text_column"], label_column=config["label_column"])
    return read_tfds(config["tfds"], folds=folds, seed=seed, split=config.get("split", "train"),
                     data_dir=config.get("data_dir"), image_size=config.get("image_size"),
                     download=config.get("download", True), image_key=config.get("image_key"),
                     label_key=config.get("label_key"))


def _image_size(value) -> tuple[int, int]:
    if (isinstance(value, (str, bytes)) or not isinstance(value, Sequence) or len(value) != 2
            or not all(_checks.is_int(v) and v > 0 for v in value)):
        raise _checks.invalid_argument("image_size", value, "(height, width), two positive ints")
    return int(value[0]), int(value[1])


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0]}" if text else type(error).__name__
