"""tfcv.data: TFDS folds (slices and stratified) and streamed fold datasets."""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds
from conftest import read_all, tiny_classifier
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sklearn.model_selection import KFold
from test_digits_tfds import N_DIGITS
from test_folds import check_cv_coverage, check_valid_split

import tfcv
from tfcv.data import Pipeline, fold_datasets, fold_indices, labels_of, tfds_folds


@pytest.fixture(scope="module")
def unprepared_dir(tmp_path_factory):
    """A data_dir where no dataset has been prepared."""
    return str(tmp_path_factory.mktemp("tfds_empty"))


def tfds_ranges(spec, split, n):
    """`[start, stop)` ranges of `spec` on a split of `n` examples, in read
    order, resolved by TFDS' own ReadInstruction (not a re-implementation)."""
    infos = {split: tfds.core.SplitInfo(name=split, shard_lengths=[n], num_bytes=0)}
    return [
        (part.from_ or 0, n if part.to is None else part.to)
        for part in tfds.core.ReadInstruction.from_spec(spec).to_absolute(infos)
    ]


def resolve_with_tfds(spec, split, n):
    """Absolute positions of `spec`, in read order (see `tfds_ranges`)."""
    return np.concatenate([np.arange(a, b) for a, b in tfds_ranges(spec, split, n)]).astype("int64")


def sorted_rows(x):
    flat = x.reshape(len(x), -1)
    return flat[np.lexsort(flat.T[::-1])]


# ------------------------------------------------------------ percent slices


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data(), k=st.integers(2, 40))
def test_percent_slices_are_disjoint_and_cover_the_split_exactly(unprepared_dir, data, k):
    n = data.draw(st.one_of(st.integers(k, 3 * k + 7), st.integers(k, 20_000)), label="n")
    plan = tfds_folds("tfcv_digits", k=k, data_dir=unprepared_dir)
    resolved = [
        (resolve_with_tfds(train, "train", n), resolve_with_tfds(val, "train", n)) for train, val in plan.folds
    ]
    index_plan = tfcv.FoldPlan(resolved)  # refuses overlapping train/val itself
    check_valid_split(index_plan, n)
    check_cv_coverage(index_plan, n, k)
    sizes = [len(val) for _, val in resolved]
    assert max(sizes) - min(sizes) <= 1
    for train, val in resolved:
        np.testing.assert_array_equal(train, np.setdiff1d(np.arange(n), val))


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data(), k=st.integers(2, 300))
def test_percent_slices_stay_exact_on_huge_splits(unprepared_dir, data, k):
    # Boundaries like 100/3 % must not lose precision on billions of examples.
    n = data.draw(st.integers(k, 10**12), label="n")
    plan = tfds_folds("tfcv_digits", k=k, data_dir=unprepared_dir)
    stop = 0
    for train, val in plan.folds:
        ((start, end),) = tfds_ranges(val, "train", n)
        assert start == stop and end - start in (n // k, -(-n // k))
        assert [r for r in tfds_ranges(train, "train", n) if r[0] != r[1]] == [
            r for r in ((0, start), (end, n)) if r[0] != r[1]
        ]
        stop = end
    assert stop == n


def test_fold_zero_is_the_documented_slice(unprepared_dir):
    plan = tfds_folds("tfcv_digits", k=5, data_dir=unprepared_dir)
    assert plan.folds[0] == ("train[20%:]", "train[0%:20%]")
    assert plan.folds[1] == ("train[:20%]+train[40%:]", "train[20%:40%]")
    assert plan.folds[4] == ("train[:80%]", "train[80%:100%]")
    assert plan.source == {"kind": "tfds", "name": "tfcv_digits", "split": "train", "load_kwargs": {"data_dir": unprepared_dir}}
    assert "train[20%:40%]" in repr(plan)


@pytest.mark.parametrize("k", [2, 3, 4, 7, 10])
def test_slices_of_the_prepared_dataset_add_up_in_tfds_split_info(tfds_digits_dir, k):
    info = tfds.builder("tfcv_digits", data_dir=tfds_digits_dir).info
    plan = tfds_folds("tfcv_digits", k=k, data_dir=tfds_digits_dir)
    val_sizes = [info.splits[val].num_examples for _, val in plan.folds]
    assert sum(val_sizes) == N_DIGITS
    assert all(info.splits[train].num_examples + info.splits[val].num_examples == N_DIGITS for train, val in plan.folds)
    assert max(val_sizes) - min(val_sizes) <= 1


def test_fold_datasets_stream_exactly_the_slices(tfds_digits_dir, raw_digits):
    x, y = raw_digits
    k = 4  # 1797 examples do not divide by 4
    plan = tfds_folds("tfcv_digits", k=k, data_dir=tfds_digits_dir)
    seen = []
    for fold, (train_spec, val_spec) in enumerate(plan.folds):
        train_idx, val_idx = fold_indices(plan, fold)
        np.testing.assert_array_equal(val_idx, resolve_with_tfds(val_spec, "train", N_DIGITS))
        np.testing.assert_array_equal(train_idx, np.sort(resolve_with_tfds(train_spec, "train", N_DIGITS)))
        train_ds, val_ds = fold_datasets(plan, fold, batch_size=128, seed=fold)
        x_val, y_val = read_all(val_ds)
        assert x_val.dtype == np.uint8 and x_val.shape[1:] == (8, 8, 1)
        np.testing.assert_array_equal(x_val, x[val_idx])
        np.testing.assert_array_equal(y_val, y[val_idx])
        x_train, y_train = read_all(train_ds)
        np.testing.assert_array_equal(sorted_rows(x_train), sorted_rows(x[train_idx]))
        np.testing.assert_array_equal(np.bincount(y_train, minlength=10), np.bincount(y[train_idx], minlength=10))
        seen.append(val_idx)
    np.testing.assert_array_equal(np.sort(np.concatenate(seen)), np.arange(N_DIGITS))


def test_training_order_is_shuffled_reproducibly_and_validation_order_is_stable(tfds_digits_dir):
    plan = tfds_folds("tfcv_digits", k=3, data_dir=tfds_digits_dir)
    train_a, val_a = fold_datasets(plan, 1, batch_size=64, seed=11)
    train_b, val_b = fold_datasets(plan, 1, batch_size=64, seed=11)
    train_c, _ = fold_datasets(plan, 1, batch_size=64, seed=12)
    _, y_a = read_all(train_a)
    _, y_b = read_all(train_b)
    _, y_c = read_all(train_c)
    _, y_a_again = read_all(train_a)  # the next epoch
    np.testing.assert_array_equal(y_a, y_b)
    assert not np.array_equal(y_a, y_c)
    assert not np.array_equal(y_a, y_a_again)
    train_idx, _ = fold_indices(plan, 1)
    assert not np.array_equal(y_a, labels_of(plan)[train_idx])  # not stored order
    np.testing.assert_array_equal(read_all(val_a)[1], read_all(val_b)[1])
    np.testing.assert_array_equal(read_all(val_a)[1], read_all(val_a)[1])
    unshuffled, _ = fold_datasets(plan, 1, batch_size=64, seed=11, shuffle=False)
    np.testing.assert_array_equal(read_all(unshuffled)[1], labels_of(plan)[train_idx])


# ------------------------------------------------------------ stratified


def test_stratified_plan_keeps_class_proportions_and_streams_its_examples(tfds_digits_dir, raw_digits):
    x, y = raw_digits
    k = 3
    plan = tfds_folds("tfcv_digits", k=k, data_dir=tfds_digits_dir, stratify=True, seed=3)
    assert plan.uses_indices and plan.fingerprint["n_samples"] == N_DIGITS
    assert plan.source == {"kind": "tfds", "name": "tfcv_digits", "split": "train", "load_kwargs": {"data_dir": tfds_digits_dir}}
    check_valid_split(plan, N_DIGITS)
    check_cv_coverage(plan, N_DIGITS, k)
    class_counts = np.bincount(y)
    for fold in range(k):
        train_idx, val_idx = fold_indices(plan, fold)
        np.testing.assert_array_equal(val_idx, plan.folds[fold][1])
        assert np.all(np.abs(np.bincount(y[val_idx], minlength=10) - class_counts / k) <= 1)
        train_ds, val_ds = fold_datasets(plan, fold, batch_size=100, seed=fold)
        assert val_ds.cardinality() == -(-len(val_idx) // 100)
        x_val, y_val = read_all(val_ds)
        np.testing.assert_array_equal(x_val, x[val_idx])
        np.testing.assert_array_equal(y_val, y[val_idx])
        x_train, _ = read_all(train_ds)
        np.testing.assert_array_equal(sorted_rows(x_train), sorted_rows(x[train_idx]))
    other = tfds_folds("tfcv_digits", k=k, data_dir=tfds_digits_dir, stratify=True, seed=4)
    assert other != plan


def test_labels_of_reads_the_labels_in_stored_order(tfds_digits_dir, raw_digits):
    _, y = raw_digits
    for plan in (
        tfds_folds("tfcv_digits", k=5, data_dir=tfds_digits_dir),
        tfds_folds("tfcv_digits", k=5, data_dir=tfds_digits_dir, stratify=True),
    ):
        np.testing.assert_array_equal(labels_of(plan), y)
        for fold in (0, 4):
            np.testing.assert_array_equal(labels_of(plan, fold), y[fold_indices(plan, fold)[1]])


@pytest.mark.parametrize("stratify", [False, True])
def test_plan_round_trips_through_json_and_still_streams(tfds_digits_dir, tmp_path, stratify):
    plan = tfds_folds("tfcv_digits", k=3, data_dir=tfds_digits_dir, stratify=stratify)
    path = tmp_path / "plan.json"
    plan.save(path)
    loaded = tfcv.FoldPlan.load(path)
    assert loaded == plan and loaded.source == plan.source and loaded.splitter == plan.splitter
    json.loads(path.read_text())  # plain JSON
    _, val_ds = fold_datasets(loaded, 2, batch_size=256, seed=0)
    np.testing.assert_array_equal(read_all(val_ds)[1], labels_of(plan, 2))


# ------------------------------------------------------------ bad input


@pytest.mark.parametrize(
    "kwargs, exc, match",
    [
        ({"k": 1}, ValueError, "k=1. Expected an int >= 2"),
        ({"k": True}, ValueError, "k=True"),
        ({"k": 2000}, ValueError, "k=2000 folds .* 1797 examples"),
        ({"split": "train[:50%]"}, ValueError, r"split='train\[:50%\]'"),
        ({"split": "all"}, ValueError, "split='all'"),
        ({"split": "test"}, ValueError, r"split='test'.*\['train'\]"),
        ({"read_config": None}, ValueError, "`read_config`"),
        ({"as_supervised": False}, ValueError, "`as_supervised`"),
        ({"builder_kwargs": {"config": object()}}, TypeError, "`builder_kwargs`.*JSON"),
        ({"stratify": "yes"}, TypeError, "stratify='yes'"),
        ({"stratify": True, "k": 200}, ValueError, "200 members of every class"),
    ],
)
def test_tfds_folds_refuses_bad_arguments(tfds_digits_dir, kwargs, exc, match):
    with pytest.raises(exc, match=match):
        tfds_folds("tfcv_digits", data_dir=tfds_digits_dir, **kwargs)


def test_tfds_folds_refuses_a_non_string_name():
    with pytest.raises(TypeError, match="name=3"):
        tfds_folds(3)


def test_tfds_folds_names_an_unknown_dataset_or_version_and_unprepared_data(tfds_digits_dir, unprepared_dir):
    # TFDS' own errors were a thousand-line list of every dataset, and an AssertionError for a version.
    with pytest.raises(ValueError, match=r"name='tfcv_digitz'.*Dataset tfcv_digitz not found\. Did you mean") as caught:
        tfds_folds("tfcv_digitz", data_dir=tfds_digits_dir)
    assert "\n" not in str(caught.value)
    with pytest.raises(ValueError, match=r"name='tfcv_digits:9\.9\.9'.*only: 1\.0\.0"):
        tfds_folds("tfcv_digits:9.9.9", data_dir=tfds_digits_dir)
    for stratify in (False, True):
        with pytest.raises(ValueError, match=r"'tfcv_digits' is not prepared in .*download=False"):
            tfds_folds("tfcv_digits", data_dir=unprepared_dir, download=False, stratify=stratify)


def test_fold_datasets_refuses_other_plans_and_bad_folds(tfds_digits_dir, digits):
    x, y = digits
    in_memory = tfcv.FoldPlan.from_splitter(KFold(3), x, y)
    with pytest.raises(ValueError, match="tfds_folds"):
        fold_datasets(in_memory, 0, batch_size=8, seed=0)
    with pytest.raises(TypeError, match="plan="):
        fold_datasets("train[0%:20%]", 0, batch_size=8, seed=0)
    plan = tfds_folds("tfcv_digits", k=3, data_dir=tfds_digits_dir)
    with pytest.raises(ValueError, match=r"fold=3.*\[0, 2\]"):
        fold_datasets(plan, 3, batch_size=8, seed=0)
    with pytest.raises(ValueError, match="batch_size=0"):
        fold_datasets(plan, 0, batch_size=0, seed=0)
    with pytest.raises(TypeError, match="seed=None"):
        fold_datasets(plan, 0, batch_size=8, seed=None)


# ------------------------------------------------------------ file caches


def test_fold_datasets_name_file_caches_per_fold_and_part(tfds_digits_dir, tmp_path):
    plan = tfds_folds("tfcv_digits", k=3, data_dir=tfds_digits_dir)
    pipeline = Pipeline(cache=tmp_path / "cache", rescale=1 / 16)
    for fold in range(2):
        train_ds, val_ds = fold_datasets(plan, fold, batch_size=256, seed=0, pipeline=pipeline)
        first = read_all(val_ds)
        read_all(train_ds)
        np.testing.assert_array_equal(read_all(val_ds)[1], first[1])
        np.testing.assert_array_equal(first[1], labels_of(plan, fold))
    names = {p.name.split(".")[0] for p in (tmp_path / "cache").iterdir()}
    assert len({n for n in names if "_val_" in n}) == 2 and len({n for n in names if "_train_" in n}) == 2


# ------------------------------------------------------------ learning


def test_streamed_cross_validation_scores_like_the_in_memory_path(tfds_digits_dir, digits):
    x, y = digits
    plan = tfds_folds("tfcv_digits", k=3, data_dir=tfds_digits_dir)
    pipeline = Pipeline(rescale=1 / 16)
    streamed, in_memory = [], []
    for fold in range(len(plan)):
        train_idx, val_idx = fold_indices(plan, fold)
        train_ds, val_ds = fold_datasets(plan, fold, batch_size=32, seed=fold, pipeline=pipeline)
        keras.utils.set_random_seed(fold)
        model = tiny_classifier()
        history = model.fit(train_ds, validation_data=val_ds, epochs=5, verbose=0)
        assert history.history["loss"][-1] < history.history["loss"][0]
        predictions = model.predict(val_ds, verbose=0)
        np.testing.assert_array_equal(labels_of(plan, fold), y[val_idx])
        streamed.append(np.mean(predictions.argmax(axis=1) == y[val_idx]))

        keras.utils.set_random_seed(fold)
        model = tiny_classifier()
        model.fit(x[train_idx], y[train_idx], batch_size=32, epochs=5, verbose=0)
        in_memory.append(model.evaluate(x[val_idx], y[val_idx], verbose=0, return_dict=True)["accuracy"])
    assert min(streamed) > 0.85 and min(in_memory) > 0.85, (streamed, in_memory)
    assert abs(np.mean(streamed) - np.mean(in_memory)) < 0.04, (streamed, in_memory)


def test_stock_mock_data_streams_a_catalogue_dataset(tmp_path):
    # tfds.testing.mock_data's own fake examples ignore slicing (every split
    # string yields `num_examples`), so this only checks that the plumbing
    # works with the stock mock; see the next test for slices.
    with tfds.testing.mock_data(num_examples=48):
        plan = tfds_folds("mnist", k=2, data_dir=str(tmp_path))
        train_ds, val_ds = fold_datasets(plan, 0, batch_size=16, seed=0, pipeline=Pipeline(rescale=1 / 255))
        assert train_ds.element_spec[0].shape.as_list() == [None, 28, 28, 1]
        assert train_ds.element_spec[0].dtype == tf.float32
        history = tiny_classifier(input_shape=(28, 28, 1)).fit(train_ds, validation_data=val_ds, epochs=1, verbose=0)
        assert np.isfinite(history.history["val_loss"][0])

        stratified = tfds_folds("mnist", k=2, data_dir=str(tmp_path), stratify=True)
        for fold in range(2):
            _, val_ds = fold_datasets(stratified, fold, batch_size=16, seed=fold)
            # Stock mocked examples depend on which features are decoded, so
            # labels read alone differ from the streamed ones; the selection
            # of the fold's positions is still exact.
            assert sum(len(b) for _, b in val_ds) == len(fold_indices(stratified, fold)[1])


def sliced_mnist_mock(n):
    """An `as_dataset_fn` for `tfds.testing.mock_data` that honours split
    slices (resolved by TFDS' ReadInstruction) over `n` fixed fake MNIST
    examples, and the decoders tfcv uses (labels only; undecoded images)."""
    rng = np.random.default_rng(0)
    labels = (np.arange(n) % 10).astype("int64")
    images = (rng.integers(0, 40, (n, 28, 28, 1)) + 20 * labels[:, None, None, None]).astype("uint8")
    encoded = np.array([tf.io.encode_png(image).numpy() for image in images], dtype=object)

    def as_dataset(self, split, decoders=None, read_config=None, **kwargs):
        positions = resolve_with_tfds(split, "train", n)
        examples = {"image": images[positions], "label": labels[positions]}
        if isinstance(decoders, dict) and isinstance(decoders.get("image"), tfds.decode.SkipDecoding):
            examples["image"] = encoded[positions]
        if isinstance(decoders, tfds.decode.PartialDecoding):
            examples = {"label": examples["label"]}
        return tf.data.Dataset.from_tensor_slices(examples)

    return as_dataset, images, labels


def uint8_classifier(input_shape, scale=1 / 255):
    inputs = keras.Input(input_shape, dtype="uint8")
    h = keras.layers.Rescaling(scale)(inputs)
    h = keras.layers.Conv2D(16, 3, padding="same", activation="relu")(h)
    h = keras.layers.Flatten()(keras.layers.MaxPooling2D(2)(h))
    outputs = keras.layers.Dense(10, activation="softmax")(h)
    model = keras.Model(inputs, outputs)
    model.compile(optimizer=keras.optimizers.Adam(3e-3), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


@pytest.mark.slow
def test_the_issue_one_liner_cross_validates_mocked_mnist(tmp_path):
    n = 250
    as_dataset, images, labels = sliced_mnist_mock(n)
    with tfds.testing.mock_data(as_dataset_fn=as_dataset):
        plan = tfcv.data.tfds_folds("mnist", k=5, data_dir=str(tmp_path))
        result = tfcv.CrossValidator(lambda: uint8_classifier((28, 28, 1)), folds=plan).fit(
            epochs=3, batch_size=64, verbose=0
        )
        assert result.n_folds == 5
        assert [len(p) for p in result.val_predictions] == [50] * 5
        assert result.oof_predictions.shape == (n, 10) and not np.isnan(result.oof_predictions).any()
        # Out-of-fold rows line up with the examples: fold 2 validates on 100..149.
        np.testing.assert_allclose(result.oof_predictions[100:150], result.val_predictions[2], rtol=1e-6)
        np.testing.assert_array_equal(labels_of(plan), labels)

        stratified = tfcv.data.tfds_folds("mnist", k=5, data_dir=str(tmp_path), stratify=True)
        for fold in range(5):
            _, val_idx = fold_indices(stratified, fold)
            np.testing.assert_array_equal(np.bincount(labels[val_idx]), np.full(10, 5))
            _, val_ds = fold_datasets(stratified, fold, batch_size=64, seed=0)
            np.testing.assert_array_equal(read_all(val_ds)[0], images[val_idx])


@pytest.mark.slow
def test_cross_validator_fits_a_streamed_tfds_plan_end_to_end(tfds_digits_dir, digits):
    _, y = digits
    plan = tfds_folds("tfcv_digits", k=3, data_dir=tfds_digits_dir)
    result = tfcv.CrossValidator(lambda: uint8_classifier((8, 8, 1), scale=1 / 16), folds=plan).fit(
        epochs=3, batch_size=64, verbose=0
    )
    assert result.n_folds == 3
    assert result.mean("accuracy") > 0.8
    assert result.oof_predictions.shape == (N_DIGITS, 10)
    oof_accuracy = np.mean(result.oof_predictions.argmax(axis=1) == y)
    assert abs(oof_accuracy - result.mean("accuracy")) < 0.02
