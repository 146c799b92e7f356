"""tfcv.sources: image folders, NPZ, CSV and TFDS names read into folds, and
`tfcv run --data` / a `data:` section."""

from __future__ import annotations

import io
import os
import sys

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds
from PIL import Image

import tfcv
from tests.conftest import tfcv_in_process
from tfcv import cli, sources
from tfcv._fold_sources import fold_source
from tfcv.datasets import load_digits

CLASSES = {0: "zero", 1: "one", 7: "seven"}


def write_image_folder(root, *, per_class=30, size=20) -> str:
    """Drawn digits 0, 1 and 7 as PNG and JPEG files of varying sizes, one
    subfolder per class."""
    x, y = load_digits()
    for digit, name in CLASSES.items():
        os.makedirs(os.path.join(root, name), exist_ok=True)
        for j, i in enumerate(np.flatnonzero(y == digit)[:per_class]):
            image = Image.fromarray((x[i, :, :, 0] * 255).astype("uint8")).convert("RGB")
            image = image.resize((size + j % 5, size + j % 3))
            image.save(os.path.join(root, name, f"{i}.{'png' if j % 2 else 'jpg'}"))
    return str(root)


def truncated_image_folder(root) -> str:
    """A class folder `cats` holding a JPEG cut in half (its header intact),
    beside `dogs` holding one PNG."""
    for name in ("cats", "dogs"):
        os.makedirs(os.path.join(root, name), exist_ok=True)
    Image.new("RGB", (4, 4)).save(os.path.join(root, "dogs", "a.png"))
    rng = np.random.default_rng(0)
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(buffer, format="JPEG")
    data = buffer.getvalue()
    with open(os.path.join(root, "cats", "cut.jpg"), "wb") as f:
        f.write(data[: len(data) // 2])
    return str(root)


def start_server(base, name, log_dir):
    """`tfcv serve` on one base path, started and available."""
    from test_serving import Server, free_port

    rest_port, grpc_port = free_port(), free_port()
    server = Server([os.path.join(os.path.dirname(sys.executable), "tfcv"), "serve", "--model_name", name,
                     "--model_base_path", str(base), "--port", str(grpc_port), "--rest_api_port", str(rest_port)],
                    rest_port=rest_port, grpc_port=grpc_port, log_path=os.path.join(log_dir, "server.log"))
    try:
        server.wait_until_available(name)
    except BaseException:
        server.stop()
        raise
    return server


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory):
    return write_image_folder(tmp_path_factory.mktemp("images") / "digits", per_class=12)


def test_image_directory_lists_files_and_class_names(image_folder):
    data = sources.image_directory(image_folder, image_size=(12, 10))
    assert data.class_names == ["one", "seven", "zero"]
    assert data.num_classes == 3 and data.input_shape == (12, 10, 3) and data.kind == "image"
    assert len(data.x) == 36 and sorted(set(data.y)) == data.class_names
    assert all(os.path.basename(os.path.dirname(p)) == label for p, label in zip(data.x.paths, data.y))


def test_file_folds_are_stratified_and_decode_in_the_pipeline(image_folder):
    data = sources.image_directory(image_folder, image_size=(8, 8), channels=1)
    source = fold_source(3, data.x, data.y, None, seed=0, batch_size=5, pipeline=None)
    seen = []
    for train, val in source.plan.folds:
        assert not set(train) & set(val)
        assert sorted(np.unique(data.y[val], return_counts=True)[1].tolist()) == [4, 4, 4]
        seen += list(val)
    assert sorted(seen) == list(range(36))
    assert source.view().sample_shape == (8, 8, 1) and source.view().class_names == ["one", "seven", "zero"]
    fold = source.fold(0, seed=1)
    x, y = next(iter(fold.validation))
    val = np.asarray(source.plan.folds[0][1])
    first = sources.decode_image(tf.io.read_file(data.x.paths[val[0]]), image_size=(8, 8), channels=1)
    assert x.shape == (12, 8, 8, 1) and x.dtype == tf.float32
    np.testing.assert_allclose(x[0], first, atol=1e-6)
    assert 0.0 <= float(tf.reduce_min(x)) and float(tf.reduce_max(x)) <= 1.0
    assert [source.class_names[i] for i in y.numpy()] == data.y[val].tolist()


@pytest.mark.parametrize("channels", [1, 3])
def test_every_documented_format_decodes_to_grey_and_colour(tmp_path, channels):
    # TensorFlow's GIF and BMP decoders refuse channels=1: a grey image folder holding them failed
    # in the middle of training with an InvalidArgumentError from inside tf.data.
    grey = Image.new("L", (6, 4), color=102)
    for fmt in ("png", "jpeg", "gif", "bmp"):
        grey.convert("RGB").save(tmp_path / f"rgb.{fmt}", format=fmt.upper())
        grey.save(tmp_path / f"grey.{fmt}", format=fmt.upper())
    for path in sorted(tmp_path.iterdir()):
        image = sources.decode_image(tf.io.read_file(str(path)), image_size=(4, 6), channels=channels)
        assert image.shape == (4, 6, channels)
        np.testing.assert_allclose(image, 102 / 255, atol=1.5 / 255, err_msg=path.name)


def test_image_folder_cross_validates_stacked_with_class_names(image_folder):
    # Streamed files in the stacked strategy: each copy draws its batches from its own fold's files.
    data = sources.load_data({"directory": image_folder, "image_size": [8, 8]})
    cv = tfcv.CrossValidator(tfcv.models.ReferenceCNN(data.input_shape, data.num_classes), folds=2,
                             strategy="stacked")
    result = cv.fit(data.x, data.y, epochs=1, verbose=0)
    assert result.info["strategy"] == "stacked" and result.info["class_names"] == ["one", "seven", "zero"]
    assert result.oof_predictions.shape == (36, 3)
    for k, (_, val) in enumerate(result.plan.folds):
        images = data.x.decode_files(tf.constant(data.x.paths[val]))
        np.testing.assert_allclose(result.models[k].predict(images, verbose=0), result.oof_predictions[val],
                                   atol=1e-5)


def test_image_folder_errors_name_the_path(tmp_path, image_folder):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        sources.image_directory(tmp_path / "nowhere")
    empty = tmp_path / "empty"
    (empty / "cats").mkdir(parents=True)
    (empty / "dogs").mkdir()
    Image.new("RGB", (4, 4)).save(empty / "dogs" / "a.png")
    with pytest.raises(ValueError, match=r"Class folder '.*cats' holds no images"):
        sources.image_directory(empty)
    (empty / "cats" / "broken.jpg").write_bytes(b"not an image at all")
    with pytest.raises(ValueError, match=r"Corrupt or unsupported image file '.*broken\.jpg'"):
        sources.image_directory(empty)
    os.remove(empty / "cats" / "broken.jpg")
    truncated_image_folder(empty)
    with pytest.raises(ValueError, match=r"Corrupt image file '.*cats/cut\.jpg': truncated or damaged .*"
                                         r"Invalid JPEG data"):
        sources.image_directory(empty)
    # A valid JPEG with data after its end (some phones append more) is decoded once, and kept.
    buffer = io.BytesIO()
    Image.new("RGB", (4, 4)).save(buffer, format="JPEG")
    (empty / "cats" / "cut.jpg").write_bytes(buffer.getvalue() + b"appended by a phone")
    assert len(sources.image_directory(empty).x) == 2
    with pytest.raises(ValueError, match="image_size"):
        sources.image_directory(image_folder, image_size=(0, 8))


def test_npz_and_csv(tmp_path):
    x, y = load_digits()
    groups = np.arange(len(x)) % 7
    np.savez(tmp_path / "d.npz", x=x, y=y, groups=groups)
    data = sources.load_data(str(tmp_path / "d.npz"))
    assert data.input_shape == (8, 8, 1) and data.num_classes == 10 and data.kind == "image"
    np.testing.assert_array_equal(data.groups, groups)
    np.savez(tmp_path / "bad.npz", images=x)
    with pytest.raises(ValueError, match="expected 'x' and 'y'"):
        sources.read_npz(tmp_path / "bad.npz")

    (tmp_path / "t.csv").write_text('text,label\n"good, very good",pos\nbad,neg\nfine,pos\n', encoding="utf-8")
    data = sources.load_data(sources.parse_data(str(tmp_path / "t.csv"), text_column="text", label_column="label"))
    assert data.x.tolist() == ["good, very good", "bad", "fine"] and data.class_names == ["neg", "pos"]
    assert data.kind == "text"
    with pytest.raises(ValueError, match=r"text_column='body'.*columns \['text', 'label'\]"):
        sources.read_csv(tmp_path / "t.csv", text_column="body", label_column="label")
    with pytest.raises(ValueError, match="needs `label_column`"):
        sources.load_data({"csv": str(tmp_path / "t.csv"), "text_column": "text"})



def test_csv_from_a_spreadsheet_and_csv_defects_are_named_by_line(tmp_path):
    # A byte-order mark (Excel's "CSV UTF-8") is not part of the first column's name.
    (tmp_path / "bom.csv").write_bytes(b"\xef\xbb\xbftext,label\ngood,pos\nbad,neg\n")
    data = sources.read_csv(tmp_path / "bom.csv", text_column="text", label_column="label")
    assert data.x.tolist() == ["good", "bad"] and data.class_names == ["neg", "pos"]
    (tmp_path / "latin1.csv").write_bytes(b"text,label\ngood,pos\ncaf\xe9 bad,neg\n")
    with pytest.raises(ValueError, match=r"'.*latin1\.csv' is not UTF-8 text: byte 0xe9 on line 3"):
        sources.read_csv(tmp_path / "latin1.csv", text_column="text", label_column="label")
    # A short row's label was the class 'None', an empty one the class ''.
    for rows, line, how in (("good,pos\nshort row\nbad,neg\n", 3, "missing"), ("good,pos\nbad,\n", 3, "empty")):
        (tmp_path / "gaps.csv").write_text("text,label\n" + rows, encoding="utf-8")
        with pytest.raises(ValueError, match=rf"no label on line {line} \(column 'label' is {how}\)"):
            sources.read_csv(tmp_path / "gaps.csv", text_column="text", label_column="label")


def test_an_unreadable_npz_file_is_one_line_naming_it(tmp_path, capsys):
    x, y = load_digits()
    np.savez(tmp_path / "ok.npz", x=x[:40], y=y[:40])
    (tmp_path / "truncated.npz").write_bytes((tmp_path / "ok.npz").read_bytes()[:500])
    (tmp_path / "text.npz").write_text("x,y\n1,2\n")
    np.savez(tmp_path / "ragged.npz", x=np.array([np.zeros(3), np.zeros(4)], dtype=object), y=y[:2])
    np.savez(tmp_path / "scalar.npz", x=np.float32(1), y=np.int64(1))
    for name, fragment in (("truncated", "is truncated or corrupt"), ("text", "is not an .npz archive"),
                           ("ragged", "cannot read without pickle"), ("scalar", "`x` is a scalar")):
        path = str(tmp_path / f"{name}.npz")
        code, err = tfcv_in_process(capsys, "run", "--data", path, "--epochs", "1", "--run-dir", str(tmp_path / name))
        assert code == 2 and err.count("\n") == 1 and f"NPZ file {path!r}" in err and fragment in err
        assert not os.path.exists(tmp_path / name)

def test_parse_data():
    assert sources.parse_data("tfds:mnist:test") == {"tfds": "mnist", "split": "test"}
    assert sources.parse_data("tfds:mnist", image_size=None) == {"tfds": "mnist"}
    assert sources.parse_data("photos/", image_size=[32, 32]) == {"directory": "photos/", "image_size": [32, 32]}
    with pytest.raises(ValueError, match="exactly one of"):
        sources.parse_data({"npz": "a.npz", "csv": "b.csv"})
    with pytest.raises(ValueError, match=r"Invalid keys \['text_column'\]"):
        sources.parse_data({"npz": "a.npz", "text_column": "t"})


def test_tfds_name_offline(tfds_digits_dir, tmp_path):
    data = sources.load_data({"tfds": "tfcv_digits", "data_dir": tfds_digits_dir}, folds=3)
    assert data.x is None and len(data.folds) == 3 and data.input_shape == (8, 8, 1)
    assert data.class_names == [str(i) for i in range(10)] and data.num_classes == 10
    with pytest.raises(ValueError, match="Unknown TFDS dataset 'no_such_dataset_xyz'"):
        sources.load_data("tfds:no_such_dataset_xyz")
    with pytest.raises(ValueError, match="'tfcv_digits' is not prepared in"):
        sources.read_tfds("tfcv_digits", folds=2, data_dir=str(tmp_path / "empty"), download=False)
    # A quoted `download: "no"` was truthy: TFDS would have downloaded.
    with pytest.raises(TypeError, match=r"download='no'\. Expected a bool"):
        sources.load_data({"tfds": "tfcv_digits", "data_dir": tfds_digits_dir, "download": "no"}, folds=3)


def test_tfcv_run_yaml_data_section_tfds(tfds_digits_dir, tmp_path, capsys):
    config = tmp_path / "experiment.yaml"
    config.write_text(f"folds: 2\nepochs: 1\ndata:\n  tfds: tfcv_digits\n  data_dir: {tfds_digits_dir}\n")
    assert cli.main(["run", str(config), "--run-dir", str(tmp_path / "run"), "--verbose", "0"]) == 0
    assert "TFDS tfcv_digits[train]" in capsys.readouterr().out
    result = tfcv.CVResult.load(tmp_path / "run")
    assert result.info["class_names"] == [str(i) for i in range(10)]


class UnsupervisedDigits(tfds.core.GeneratorBasedBuilder):
    """Digits 0, 1 and 7 as a TFDS dataset without supervised keys: the
    image under `picture`, the label under `digit`, and a `note` beside."""

    name = "tfcv_test_unsupervised_digits"
    VERSION = tfds.core.Version("1.0.0")

    def _info(self):
        return tfds.core.DatasetInfo(
            builder=self,
            features=tfds.features.FeaturesDict({
                "picture": tfds.features.Image(shape=(8, 8, 1), dtype=np.uint8),
                "digit": tfds.features.ClassLabel(names=list(CLASSES.values())),
                "note": tfds.features.Text(),
            }),
            supervised_keys=None,
        )

    def _split_generators(self, dl_manager):
        return {"train": self._generate_examples()}

    def _generate_examples(self):
        x, y = load_digits()
        for label, digit in enumerate(CLASSES):
            for i in np.flatnonzero(y == digit)[:20]:
                yield int(i), {"picture": (x[i] * 255).astype("uint8"), "digit": label, "note": f"example {i}"}


def test_tfds_without_supervised_keys_reads_image_key_and_label_key(tmp_path, capsys):
    data_dir = str(tmp_path / "tfds")
    UnsupervisedDigits(data_dir=data_dir).download_and_prepare()
    name = UnsupervisedDigits.name
    with pytest.raises(ValueError, match=r"no supervised keys .*image_key.*\['digit', 'note', 'picture'\]"):
        sources.load_data({"tfds": name, "data_dir": data_dir}, folds=2)
    with pytest.raises(ValueError, match="needs `label_key` too"):
        sources.load_data({"tfds": name, "data_dir": data_dir, "image_key": "picture"}, folds=2)
    with pytest.raises(ValueError, match=r"has no feature 'image'"):
        sources.load_data({"tfds": name, "data_dir": data_dir, "image_key": "image", "label_key": "digit"}, folds=2)
    data = sources.load_data({"tfds": name, "data_dir": data_dir, "image_key": "picture", "label_key": "digit"},
                             folds=2)
    assert data.input_shape == (8, 8, 1) and data.kind == "image" and data.class_names == list(CLASSES.values())
    assert data.folds.source["supervised_keys"] == ["picture", "digit"]
    train, _ = tfcv.data.fold_datasets(data.folds, 0, batch_size=8, seed=0, pipeline=data.pipeline)
    x, y = next(iter(train))
    assert x.shape == (8, 8, 8, 1) and x.dtype == tf.float32 and y.dtype == tf.int64

    config = tmp_path / "experiment.yaml"
    config.write_text(f"folds: 2\nepochs: 1\ndata: {{tfds: {name}, data_dir: {data_dir}, image_key: picture, "
                      "label_key: digit}\n")
    assert cli.main(["run", str(config), "--run-dir", str(tmp_path / "run"), "--verbose", "0"]) == 0
    assert f"TFDS {name}[train]" in capsys.readouterr().out
    result = tfcv.CVResult.load(tmp_path / "run")
    assert result.info["class_names"] == list(CLASSES.values()) and result.oof_predictions.shape == (60, 3)


def test_tfcv_run_data_errors_are_one_line(tmp_path, capsys):
    for args, expected in [
        (["--data", str(tmp_path / "missing")], "does not exist. Expected an image folder"),
        (["--data", "tfds:no_such_dataset_xyz"], "Unknown TFDS dataset 'no_such_dataset_xyz'"),
        (["--image-size", "8", "8"], "--image-size need --data"),
        (["--image-key", "picture", "--label-key", "digit"], "--image-key, --label-key need --data"),
        (["--data", str(tmp_path / "t.csv")], "needs `text_column` (--text-column"),
        (["--data", truncated_image_folder(tmp_path / "cut")], "cut.jpg': truncated or damaged"),
    ]:
        assert cli.main(["run", *args, "--run-dir", str(tmp_path / "r")]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("tfcv run: error:") and expected in err[0], err


@pytest.mark.parametrize("folds", ["int", "splitter", "plan", "string labels"])
def test_in_memory_fingerprint_is_the_datas_whichever_plan_carries_it(small_digits, folds):
    # The run records the data's fingerprint; for arrays it is read from the
    # fold plan when the plan carries it, and must be what hashing gives.
    from sklearn.model_selection import KFold

    from tfcv._fold_sources import _ArraySource
    from tfcv.folds import FoldPlan, data_fingerprint

    x, y = small_digits
    if folds == "string labels":
        y = np.asarray([f"digit {v}" for v in y])
    plan = {"int": 3, "string labels": 3, "splitter": KFold(3, shuffle=True, random_state=0),
            "plan": FoldPlan.from_splitter(KFold(3), x, y)}[folds]
    source = _ArraySource(plan, x, y, None, seed=0, batch_size=32)
    assert source.fingerprint() == data_fingerprint(x, y)
    assert source.fingerprint() is not source.plan.fingerprint
