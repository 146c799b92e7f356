"""FoldPlan: invariants for every splitter, JSON round trips, bad input."""

from __future__ import annotations

import re

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.model_selection import (
    GroupKFold,
    KFold,
    RepeatedStratifiedKFold,
    ShuffleSplit,
    StratifiedGroupKFold,
    StratifiedKFold,
)

import tfcv
from tfcv.folds import check_folds, data_fingerprint, holdout_split


def check_valid_split(plan, n_samples):
    """Every fold: disjoint train/val, indices in range, nothing empty."""
    for train, val in plan.folds:
        assert len(train) and len(val)
        assert np.intersect1d(train, val).size == 0
        assert train.min() >= 0 and val.max() < n_samples
        assert len(np.unique(train)) == len(train) and len(np.unique(val)) == len(val)


def check_cv_coverage(plan, n_samples, n_splits):
    """Validation folds are disjoint and cover every sample exactly once."""
    assert len(plan) == n_splits
    counts = np.bincount(np.concatenate([val for _, val in plan.folds]), minlength=n_samples)
    np.testing.assert_array_equal(counts, np.ones(n_samples))
    for train, val in plan.folds:
        assert len(train) + len(val) == n_samples


@pytest.mark.parametrize(
    "splitter",
    [KFold(5), KFold(4, shuffle=True, random_state=1), StratifiedKFold(5), StratifiedKFold(3, shuffle=True, random_state=2)],
    ids=repr,
)
def test_kfold_like_splitters_cover_every_sample_once(digits, splitter):
    x, y = digits
    plan = tfcv.FoldPlan.from_splitter(splitter, x, y)
    check_valid_split(plan, len(x))
    check_cv_coverage(plan, len(x), splitter.get_n_splits())


def test_stratification_keeps_class_proportions_within_one_sample(digits):
    x, y = digits
    plan = tfcv.FoldPlan.from_splitter(StratifiedKFold(5, shuffle=True, random_state=0), x, y)
    totals = np.bincount(y)
    for _, val in plan.folds:
        counts = np.bincount(y[val], minlength=len(totals))
        expected = totals / 5
        assert np.all(np.abs(counts - expected) <= 1), (counts, expected)


@pytest.mark.parametrize("splitter", [GroupKFold(4), StratifiedGroupKFold(4, shuffle=True, random_state=0)], ids=repr)
def test_group_splitters_never_put_a_group_on_both_sides(digits, splitter):
    x, y = digits
    groups = np.arange(len(x)) % 37
    plan = tfcv.FoldPlan.from_splitter(splitter, x, y, groups=groups)
    check_valid_split(plan, len(x))
    check_cv_coverage(plan, len(x), 4)
    for train, val in plan.folds:
        assert not set(groups[train]) & set(groups[val])


def test_repeated_stratified_kfold_covers_every_sample_once_per_repeat(digits):
    x, y = digits
    plan = tfcv.FoldPlan.from_splitter(RepeatedStratifiedKFold(n_splits=3, n_repeats=2, random_state=0), x, y)
    assert len(plan) == 6
    check_valid_split(plan, len(x))
    for repeat in range(2):
        sub = tfcv.FoldPlan(plan.folds[repeat * 3 : repeat * 3 + 3])
        check_cv_coverage(sub, len(x), 3)


def test_shuffle_split_is_accepted_without_coverage(digits):
    x, y = digits
    plan = tfcv.FoldPlan.from_splitter(ShuffleSplit(3, test_size=0.2, random_state=0), x, y)
    check_valid_split(plan, len(x))
    assert len(plan) == 3


@settings(max_examples=40, deadline=None)
@given(n_samples=st.integers(4, 300), n_splits=st.integers(2, 10), seed=st.integers(0, 2**16), stratified=st.booleans())
def test_int_folds_are_disjoint_and_cover_every_sample(n_samples, n_splits, seed, stratified):
    n_splits = min(n_splits, n_samples)
    x = np.arange(n_samples, dtype="float32").reshape(-1, 1)
    if stratified:
        n_classes = max(1, min(3, n_samples // n_splits))
        y = np.arange(n_samples) % n_classes
        if n_classes < 2:
            y = np.linspace(0, 1, n_samples)  # regression labels: KFold
    else:
        y = np.linspace(0, 1, n_samples)
    plan = check_folds(n_splits, x, y, seed=seed)
    check_valid_split(plan, n_samples)
    check_cv_coverage(plan, n_samples, n_splits)


def test_int_folds_pick_stratified_for_labels_and_kfold_for_values(digits):
    x, y = digits
    assert "StratifiedKFold" in check_folds(5, x, y).splitter
    assert "StratifiedKFold" not in check_folds(5, x, y.astype("float32") + 0.5).splitter


def test_json_round_trip(tmp_path, digits):
    x, y = digits
    plan = tfcv.FoldPlan.from_splitter(StratifiedKFold(5, shuffle=True, random_state=0), x, y)
    path = tmp_path / "plan.json"
    plan.save(path)
    loaded = tfcv.FoldPlan.load(path)
    assert loaded == plan
    assert loaded.fingerprint == data_fingerprint(x, y)
    for (t1, v1), (t2, v2) in zip(plan.folds, loaded.folds):
        np.testing.assert_array_equal(t1, t2)
        np.testing.assert_array_equal(v1, v2)
    loaded.check_data(x, y)
    # A truncated or foreign file is named (plan.json in a run directory, on resume and on load).
    path.write_text(path.read_text()[:40])
    with pytest.raises(ValueError, match=re.escape(f"{path} is not a readable FoldPlan (JSONDecodeError")):
        tfcv.FoldPlan.load(path)
    path.write_text('{"format": "tfcv.FoldPlan"}')
    with pytest.raises(ValueError, match=r"plan.json is not a readable FoldPlan \(KeyError: 'folds'\)"):
        tfcv.FoldPlan.load(path)


def test_plan_refuses_other_data(digits):
    x, y = digits
    plan = tfcv.FoldPlan.from_splitter(KFold(3), x, y)
    other = x.copy()
    other[0, 0, 0, 0] += 0.5
    with pytest.raises(ValueError, match="does not match the data"):
        plan.check_data(other, y)
    with pytest.raises(ValueError, match="does not match the data"):
        tfcv.CrossValidator(lambda: None, folds=plan).fit(other, y, epochs=1, verbose=0)


def test_repr_is_useful(digits):
    x, y = digits
    plan = tfcv.FoldPlan.from_splitter(KFold(2), x[:10], y[:10])
    assert repr(plan) == "FoldPlan(n_folds=2, train/val sizes=[5/5, 5/5], splitter=KFold(n_splits=2, random_state=None, shuffle=False))"


@pytest.mark.parametrize(
    ("folds", "exc", "match"),
    [
        (1, ValueError, "folds=1"),
        (0, ValueError, "folds=0"),
        (True, ValueError, "folds=True"),
        ("five", TypeError, "folds='five'"),
    ],
)
def test_bad_folds_argument(folds, exc, match):
    with pytest.raises(exc, match=match):
        tfcv.CrossValidator(lambda: None, folds=folds)


def test_fewer_samples_than_folds():
    x = np.zeros((3, 2), "float32")
    with pytest.raises(ValueError, match="fewer samples than folds. Use n_splits <= 3"):
        check_folds(5, x, np.array([0.1, 0.2, 0.3]))
    with pytest.raises(ValueError, match="from 0 samples: fewer samples than folds. Cross-validation needs at least 2"):
        check_folds(5, x[:0], np.array([]))


def test_class_with_too_few_members_names_the_class_and_its_count():
    x = np.zeros((20, 2), "float32")
    y = np.array([0] * 10 + [1] * 8 + [7] * 2)
    with pytest.raises(ValueError, match="class 7 has 2"):
        check_folds(5, x, y)
    with pytest.raises(ValueError, match="class 7 has 2"):
        tfcv.FoldPlan.from_splitter(StratifiedKFold(3), x, y)
    # The advice never asks for fewer than 2 folds.
    with pytest.raises(ValueError, match=r"class 7 has 2\. Use fewer folds \(folds <= 2\)"):
        check_folds(5, x, y)
    y[-1] = 8
    with pytest.raises(ValueError, match=r"class 8 has 1\. Remove or merge the classes with one member, or pass"):
        check_folds(5, x, y)


def test_groups_of_wrong_length():
    x = np.zeros((10, 2), "float32")
    with pytest.raises(ValueError, match="len\\(groups\\)=4"):
        tfcv.FoldPlan.from_splitter(GroupKFold(2), x, groups=[0, 1, 2, 3])


def test_x_and_y_of_different_lengths():
    with pytest.raises(ValueError, match="len\\(x\\)=10, len\\(y\\)=9"):
        check_folds(2, np.zeros((10, 2)), np.zeros(9))


def test_overlapping_fold_is_refused():
    with pytest.raises(ValueError, match="both train and val"):
        tfcv.FoldPlan([([0, 1, 2], [2, 3])])


def test_non_splitter_is_refused(digits):
    x, y = digits
    with pytest.raises(TypeError, match="scikit-learn splitter"):
        tfcv.FoldPlan.from_splitter(object(), x, y)


# ------------------------------------------------------------ holdout


def test_holdout_split_is_stratified_and_seeded(digits):
    x, y = digits
    x_train, x_test, y_train, y_test = holdout_split(x, y, test_size=0.2, seed=3)
    assert len(x_test) == len(y_test) == 360 and len(x_train) == len(y_train) == 1437
    # Every class keeps its share of the data, to within one sample.
    assert np.all(np.abs(np.bincount(y_test) - 0.2 * np.bincount(y)) <= 1)
    again = holdout_split(x, y, test_size=0.2, seed=3)
    np.testing.assert_array_equal(again[1], x_test)
    other = holdout_split(x, y, test_size=0.2, seed=4)
    assert not np.array_equal(other[3], y_test)
    with pytest.raises(ValueError, match=re.escape("seed=-1. Expected an int in [0, 2**32 - 1] or None")):
        holdout_split(x, y, test_size=0.2, seed=-1)


def test_holdout_split_of_a_regression_target():
    x = np.arange(50, dtype="float32").reshape(50, 1)
    x_train, x_test, y_train, y_test = holdout_split(x, x[:, 0] * 0.5, test_size=0.3)
    assert len(x_test) == 15
    np.testing.assert_array_equal(y_test, x_test[:, 0] * 0.5)


@pytest.mark.parametrize("test_size", [0, 1, 1.5, -0.1, True, "0.2", None])
def test_holdout_split_bad_test_size(digits, test_size):
    x, y = digits
    with pytest.raises(ValueError, match=f"test_size={test_size!r}"):
        holdout_split(x, y, test_size=test_size)


def test_holdout_split_refuses_mismatched_lengths(digits):
    x, y = digits
    with pytest.raises(ValueError, match=r"len\(x\)=1797, len\(y\)=10"):
        holdout_split(x, y[:10], test_size=0.2)
