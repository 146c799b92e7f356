# %% [markdown]
# # 2. Models as specs, and an honest look at augmentation
#
# A model you can describe in ten lines of YAML is a model you can review, diff, store next to its
# results and rebuild identically for every fold. In this notebook you will describe a CNN as a
# `tfcv.ModelSpec`, build it with `tfcv.build_model`, and see how the spec is checked before
# anything is built. You will then add image augmentation (`tfcv.layers.Augmentation`, Keras'
# own random layers described as data), look at what it does to the digits, and answer the
# question people usually answer too quickly: *does augmentation help here?* You will
# cross-validate the model with and without it on the same folds and compare the scores honestly:
# mean ± standard deviation, fold by fold, and whether the difference is larger than the spread
# between folds.

# %% [markdown]
# ## Parameters
#
# The defaults give meaningful results in a few minutes on a CPU. The test suite sets
# `TFCV_NOTEBOOK_FAST=1`, which shrinks everything so that the notebook runs in seconds; the
# numbers printed in fast mode are not worth interpreting.

# %% tags=["parameters"]
import os

FAST = os.environ.get("TFCV_NOTEBOOK_FAST") == "1"

N_SAMPLES = 400 if FAST else 1797   # digits used (the data set has 1,797)
FOLDS = 2 if FAST else 5            # k of k-fold
EPOCHS = 8 if FAST else 30          # epochs per fold
BATCH_SIZE = 32
SEED = 0

# %%
# %matplotlib inline
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # hide TensorFlow's C++ start-up messages

import logging

import matplotlib.pyplot as plt
import numpy as np
from sklearn.model_selection import train_test_split

import tfcv

# tfcv builds a fresh model per fold; TensorFlow warns about the retracing this causes.
logging.getLogger("tensorflow").setLevel(logging.ERROR)

x, y = tfcv.datasets.load_digits()
if N_SAMPLES < len(x):
    x, _, y, _ = train_test_split(x, y, train_size=N_SAMPLES, stratify=y, random_state=SEED)
print("x", x.shape, "| y", y.shape)

# %% [markdown]
# ## 1. A model described as data
#
# A `ModelSpec` says *what* the model is; `tfcv.build_model(spec)` builds the functional Keras
# model. Only `input_shape` and `num_classes` are required, everything else has a default. The spec
# can be written in Python (`ModelSpec.from_dict`) or in YAML (`ModelSpec.from_yaml`, with a safe
# loader), for example in a config file next to your experiment.

# %%
SPEC = """
input_shape: [8, 8, 1]
num_classes: 10
preprocessing:
  normalization: true          # adapted by tfcv on each fold's training split
backbone:
  blocks:                      # conv -> batch norm -> relu -> 2x2 max pooling
    - {filters: 16}
    - {filters: 32, dropout: 0.1}
head:
  units: [32]                  # global average pooling, then dense layers
  dropout: 0.2
training:
  optimizer: adam
  learning_rate: 3e-3
"""
spec = tfcv.ModelSpec.from_yaml(SPEC)
spec

# %% [markdown]
# The spec's `repr` lists only what differs from the defaults; `spec.to_yaml()` writes it out with
# every default filled in, and `ModelSpec.from_yaml(spec.to_yaml())` gives back an equal spec.
# The built model's layers carry the names of the spec's parts (`normalization`, `block1_conv`,
# ..., `head_dense1`, `predictions`), so its summary reads like the spec:

# %%
model = tfcv.build_model(spec)
model.summary()

# %% [markdown]
# Because the spec is validated when it is made, mistakes fail immediately, with the path of the
# bad key, the value received and what is accepted, instead of deep inside Keras halfway through a
# run:

# %%
for bad in [
    {"backbone": {"blocks": [16, {"filters": 32, "pooling": "maximum"}]}},
    {"augmentation": [{"rotat": 0.1}]},
    {"head": {"units": 32}},
]:
    try:
        tfcv.ModelSpec.from_dict(spec, **bad)
    except (ValueError, TypeError) as error:
        print(f"{type(error).__name__}: {error}\n")

# %% [markdown]
# `tfcv.ModelBuilder(spec)` is the function `CrossValidator` needs: each call builds a fresh,
# compiled model from the spec. It pickles as the spec's plain dict, so folds can also be built in
# other processes.

# %% [markdown]
# ## 2. Augmentation, described as data
#
# `tfcv.layers.Augmentation` takes a list of one-key dicts; each becomes one of Keras' random image
# layers (`{"rotate": 0.04}` is `keras.layers.RandomRotation(0.04)`, a rotation of up to
# ±0.04 turns, about ±14°). The names it knows:

# %%
print(", ".join(tfcv.layers.AUGMENTATIONS))

# %% [markdown]
# Augmentation should produce images that still carry their label **and** look like the images the
# model will be asked about. A first try: small rotations, zooms and shifts.
# `tfcv.plots.augmentation_grid` shows each original image followed by independent random draws:

# %%
FIRST_TRY = [
    {"rotate": 0.04},      # up to ±14 degrees
    {"zoom": 0.1},         # up to ±10 %
    {"translate": 0.125},  # up to ±1 pixel on 8x8 images
]
examples = x[[np.flatnonzero(y == digit)[0] for digit in (2, 3, 4, 7)]]
tfcv.plots.augmentation_grid(tfcv.layers.Augmentation(FIRST_TRY, seed=SEED), examples, n=7)

# %% [markdown]
# Look before you train. Each of these layers resamples the image with bilinear interpolation, and
# at 8×8 pixels every resampling blurs: the augmented digits are smoother than any real digit in
# the data. The model would train on images unlike the ones it is validated on (and its batch
# normalization would learn the statistics of blurred images). A horizontal flip, harmless for
# photos of cats, is worse: a mirrored 2, 3, 4 or 7 is not the same digit, and sometimes not a
# digit at all, so training on flips teaches wrong labels.

# %%
tfcv.plots.augmentation_grid(tfcv.layers.Augmentation([{"flip": "horizontal"}], seed=SEED), examples, n=3)

# %% [markdown]
# What really varies between handwritten digits at this resolution is, among other things, where
# they sit: a pixel up or down, left or right. An item can also be a dict of the Keras layer's
# arguments, so whole-pixel shifts are `RandomTranslation` with nearest-neighbour interpolation and
# zeros shifted in at the border. The digits stay sharp:

# %%
AUGMENTATION = [
    {"translate": {"height_factor": 0.125, "width_factor": 0.125,  # up to one pixel on 8x8 images
                   "interpolation": "nearest", "fill_mode": "constant"}},
]
augment = tfcv.layers.Augmentation(AUGMENTATION, seed=SEED)
tfcv.plots.augmentation_grid(augment, examples, n=7)

# %% [markdown]
# The layer only randomizes in training (`training=True`, as `fit` calls it). In `predict`,
# `evaluate` and a served model it is the identity, so the same model serves clean predictions:

# %%
batch = x[:16]
print("inference, identity:          ", np.array_equal(np.asarray(augment(batch)), batch))
print("training, randomized:         ", not np.allclose(np.asarray(augment(batch, training=True)), batch))

# %% [markdown]
# In a spec, the same list goes under `augmentation:`; the builder places the layer after
# rescaling and before normalization, so the normalization statistics are those of real images.

# %%
spec_augmented = tfcv.ModelSpec.from_dict(spec, augmentation=AUGMENTATION)
print([layer.name for layer in tfcv.build_model(spec_augmented).layers][:4])

# %% [markdown]
# ## 3. Does augmentation help? Cross-validate both, on the same folds
#
# A fair comparison changes one thing. Both runs below use the same data, the same folds (the
# fold plan depends only on the labels and `seed`), the same per-fold seeds and the same number of
# epochs; only the `augmentation` entry differs.

# %%
results = {}
for name, model_spec in [("without augmentation", spec), ("with augmentation", spec_augmented)]:
    cv = tfcv.CrossValidator(tfcv.ModelBuilder(model_spec), folds=FOLDS, seed=SEED)
    results[name] = cv.fit(x, y, epochs=EPOCHS, batch_size=BATCH_SIZE, verbose=0)
    print(f"{name:>21}: accuracy {results[name].mean('accuracy'):.4f} ± {results[name].std('accuracy'):.4f}"
          f"   f1 {results[name].mean('f1'):.4f} ± {results[name].std('f1'):.4f}")

baseline, augmented = results["without augmentation"], results["with augmentation"]
assert baseline.plan == augmented.plan  # the very same folds

# %% [markdown]
# Two numbers with a "±" are not yet a conclusion. Because both runs used the same folds, we can
# compare them **fold by fold**: a hard fold is hard for both models, so the per-fold differences
# vary less than the scores themselves. The question is whether the mean difference is larger
# than the noise of those differences.
#
# The textbook paired t-test answers it wrongly here: it assumes the folds are independent
# samples, but every two training sets share most of their rows (with 5 folds, three quarters of
# them), so the differences are correlated and their variance is underestimated. The
# Nadeau–Bengio *corrected resampled t-test* inflates that variance by the test/train size ratio,
# `(1/k + n_test/n_train)` instead of `1/k`. `tfcv.compare` runs it and says what it means.

# %%
comparison = tfcv.compare(baseline, augmented, metric="accuracy", names=("no augmentation", "augmentation"))
print("fold   without    with   difference")
for k, (a, b, d) in enumerate(zip(comparison.scores_a, comparison.scores_b, comparison.differences), start=1):
    print(f"{k:>4}   {a:.4f}   {b:.4f}   {d:+.4f}")
print(f"\ncorrected t = {comparison.t:.2f}, p = {comparison.p_value:.3f}   "
      f"(naive paired t = {comparison.naive_t:.2f}, p = {comparison.naive_p_value:.3f})")
print(comparison.summary())
base_scores, aug_scores = comparison.scores_a, comparison.scores_b

# %%
fig, axes = plt.subplots(1, 2, figsize=(11, 3.5))
ax = axes[0]
for k in range(len(base_scores)):
    ax.plot([0, 1], [base_scores[k], aug_scores[k]], marker="o", color=f"C{k}", label=f"fold {k + 1}")
for i, res in enumerate([baseline, augmented]):
    ax.errorbar(i + 0.08, res.mean("accuracy"), yerr=res.std("accuracy"), color="k", capsize=6, marker="s")
ax.set_xticks([0, 1], ["without", "with augmentation"])
ax.set_xlim(-0.3, 1.3)
ax.set_ylabel("validation accuracy")
ax.set_title("Per fold (lines) and mean ± std (black)")
ax.legend(fontsize=8)

ax = axes[1]
for name, res, style in [("without", baseline, "-"), ("with augmentation", augmented, "--")]:
    train = np.mean([h["loss"] for h in res.histories], axis=0)
    val = np.mean([h["val_loss"] for h in res.histories], axis=0)
    epochs = np.arange(1, len(train) + 1)
    ax.plot(epochs, train, "C0" + style, label=f"training loss, {name}")
    ax.plot(epochs, val, "C1" + style, label=f"validation loss, {name}")
ax.set_xlabel("epoch")
ax.set_title("Loss, averaged over the folds")
ax.legend(fontsize=8)
plt.show()

# %% [markdown]
# How to read this:
#
# - With augmentation the **training** loss is usually higher: the model never sees the same image
#   twice, so it cannot memorize. What matters is the validation loss.
# - Augmentation is a regularizer; it pays off when the model over-fits (small data, many epochs)
#   and may cost accuracy when training is short, because the model has a harder task in the same
#   number of steps. The answer depends on the data, the model and the budget, which is why you
#   measure it instead of assuming it.
# - With few folds the standard deviation itself is uncertain. For a decision that matters, use
#   more folds or `RepeatedStratifiedKFold` (any scikit-learn splitter works as `folds=`), and keep
#   the comparison paired: same folds, one change.
#
# ## Exercises
#
# 1. Cross-validate `FIRST_TRY` the same way. Is the blur visible in the scores? Then try stronger
#    shifts (`0.25`: two pixels) or add `{"erase": 0.2}`, looking at the grid first each time.
# 2. Train both models for a third of the epochs, then for twice as many. Does the verdict change?
# 3. Replace the folds with `RepeatedStratifiedKFold(n_splits=5, n_repeats=3, random_state=0)`.
#    `tfcv.compare` uses all 15 differences: how do the interval and the p-value change? Draw them
#    with `tfcv.plots.compare(comparison)`.
# 4. Change the spec instead of the augmentation: `residual: true` blocks, `head: {pooling: flatten}`,
#    or `training: {label_smoothing: 0.1}`, and compare the same way.
# 5. Write the spec to a file with `spec.to_yaml()`, edit it by hand, read it back with
#    `tfcv.ModelSpec.from_yaml(path)` and check `spec == tfcv.ModelSpec.from_yaml(path)`.
