# %% [markdown]
# # 3. Fold ensembles and uncertainty
#
# Cross-validation leaves you with `k` trained models. Throwing them away and retraining one model
# on everything is common; keeping them is often better. In this notebook you will compare the
# **fold ensemble** (the average of the fold models) with each fold model alone on held-out test
# digits, then make predictions *randomized* on purpose: **test-time augmentation** (the model's
# augmentation layers stay on at prediction time) and **Monte-Carlo dropout** (its dropout layers
# stay on), both with `tfcv.layers.randomized_inference`. Averaging many randomized passes gives a
# prediction and a measure of how sure the model is. You will see how that measure, the predictive
# entropy, differs between clean digits and corrupted or out-of-distribution inputs (noise,
# rotated digits, blank images), and look at the digits the model is least sure about. Finally you
# will calibrate the served probabilities with a temperature and add conformal prediction sets with
# a coverage guarantee, both fitted on the folds, and measure them on clean and shifted digits.

# %% [markdown]
# ## Parameters
#
# The defaults give meaningful results in a few minutes on a CPU. The test suite sets
# `TFCV_NOTEBOOK_FAST=1`, which shrinks everything so that the notebook runs in seconds; the
# numbers printed in fast mode are not worth interpreting.

# %% tags=["parameters"]
import os

FAST = os.environ.get("TFCV_NOTEBOOK_FAST") == "1"

N_SAMPLES = 500 if FAST else 1797   # digits used, before holding out a test set
TEST_SIZE = 0.25                    # fraction held out, never seen by cross-validation
FOLDS = 3 if FAST else 5
EPOCHS = 8 if FAST else 30
SAMPLES = 8 if FAST else 32         # randomized forward passes per image
BATCH_SIZE = 32
SEED = 0

# %%
# %matplotlib inline
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # hide TensorFlow's C++ start-up messages

import logging

import matplotlib.pyplot as plt
import numpy as np
from sklearn.metrics import accuracy_score, log_loss, roc_auc_score
from sklearn.model_selection import train_test_split

import tfcv

# tfcv builds a fresh model per fold; TensorFlow warns about the retracing this causes.
logging.getLogger("tensorflow").setLevel(logging.ERROR)

x, y = tfcv.datasets.load_digits()
if N_SAMPLES < len(x):
    x, _, y, _ = train_test_split(x, y, train_size=N_SAMPLES, stratify=y, random_state=SEED)
x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=TEST_SIZE, stratify=y, random_state=SEED)
print(f"cross-validation on {len(x_train)} digits, {len(x_test)} held out for testing")

# %% [markdown]
# ## A model with something to randomize
#
# The spec has an augmentation layer (the whole-pixel shifts of notebook 2; the identity at
# prediction time, unless asked otherwise) and two dropout layers (one in the second conv block,
# one in the head).

# %%
spec = tfcv.ModelSpec.from_dict({
    "input_shape": [8, 8, 1],
    "num_classes": 10,
    "preprocessing": {"normalization": True},
    "augmentation": [{"translate": {"height_factor": 0.125, "width_factor": 0.125,  # whole-pixel shifts
                                    "interpolation": "nearest", "fill_mode": "constant"}}],
    "backbone": {"blocks": [16, {"filters": 32, "dropout": 0.1}]},
    "head": {"units": [64], "dropout": 0.3},
    "training": {"learning_rate": 3e-3},
})
result = tfcv.CrossValidator(tfcv.ModelBuilder(spec), folds=FOLDS, seed=SEED).fit(
    x_train, y_train, epochs=EPOCHS, batch_size=BATCH_SIZE, verbose=0)
print(result.summary())

# %% [markdown]
# ## 1. The fold ensemble versus single fold models
#
# Each fold model trained on a different `(k-1)/k` of the data. `result.ensemble("mean")` is one
# Keras model that runs all of them and averages their probabilities; `result.evaluate` scores
# that ensemble on held-out data. We compare accuracy and **log loss** (the average of
# `-log p(true class)`): log loss also punishes confident mistakes, so it shows calibration as well
# as correctness.

# %%
def test_scores(probabilities):
    return (accuracy_score(y_test, probabilities.argmax(axis=1)),
            log_loss(y_test, probabilities, labels=np.arange(10)))


fold_probabilities = [np.asarray(model.predict(x_test, verbose=0)) for model in result.models]
ensemble = result.ensemble("mean")
ensemble_probabilities = np.asarray(ensemble.predict(x_test, verbose=0))

rows = [(f"fold {k + 1} model", *test_scores(p)) for k, p in enumerate(fold_probabilities)]
rows.append(("fold ensemble (mean)", *test_scores(ensemble_probabilities)))
print(f"{'':>22}  test accuracy  test log loss")
for name, accuracy, loss in rows:
    print(f"{name:>22}  {accuracy:13.4f}  {loss:13.4f}")
print("\nresult.evaluate:", result.evaluate(x_test, y_test))

fig, axes = plt.subplots(1, 2, figsize=(10, 3))
names = [r[0].replace(" model", "").replace(" (mean)", "") for r in rows]
colors = ["C0"] * result.n_folds + ["C3"]
for ax, column, title in [(axes[0], 1, "test accuracy (higher is better)"), (axes[1], 2, "test log loss (lower is better)")]:
    values = [r[column] for r in rows]
    ax.bar(names, values, color=colors)
    ax.set_ylim(min(values) * 0.95, max(values) * 1.02)
    ax.set_title(title)
    ax.tick_params(axis="x", rotation=30)
plt.show()

# %% [markdown]
# Averaging models that made *different* mistakes cancels part of them: the ensemble usually beats
# the average fold model on accuracy and on log loss. It need not beat the best fold model, but
# nobody can tell in advance which fold model that will be on new data; the ensemble is the safer
# bet. The price is `k` forward passes per prediction, which the export of notebook 4 runs as one
# graph.
#
# ## 2. Randomized predictions: test-time augmentation and MC dropout
#
# The ensemble gives one probability vector per image. To ask *how sure* the model is, we can also
# perturb the prediction itself and watch how much it moves:
#
# - **test-time augmentation (TTA)**: keep the augmentation layer on, so each pass sees the image
#   shifted by up to a pixel in each direction;
# - **Monte-Carlo dropout**: keep the dropout layers on, so each pass uses a random sub-network.
#
# Keras has a single `training` flag, and `training=True` would also switch batch normalization to
# batch statistics (and update them). `tfcv.layers.randomized_inference()` is a narrower switch:
# inside it, augmentation and dropout randomize while everything else stays in inference mode.
# The helper below runs `samples` passes as one batched call.

# %%
def randomized_probabilities(model, images, samples, *, augmentation=True, dropout=True):
    """`samples` randomized predictions per image: an array (samples, images, classes)."""
    tiled = np.concatenate([images] * samples)  # one call runs every pass
    with tfcv.layers.randomized_inference(augmentation=augmentation, dropout=dropout):
        # Call the model directly: model.predict caches a function traced outside the context.
        probabilities = np.asarray(model(tiled, training=False))
    return probabilities.reshape(samples, len(images), -1)


def entropy(probabilities):
    """Predictive entropy in nats: 0 when sure, log(10) = 2.30 for a uniform guess."""
    p = np.clip(probabilities, 1e-12, 1.0)
    return -np.sum(p * np.log(p), axis=-1)


modes = {
    "nothing (deterministic)": dict(augmentation=False, dropout=False),
    "test-time augmentation": dict(augmentation=True, dropout=False),
    "MC dropout": dict(augmentation=False, dropout=True),
    "TTA + MC dropout": dict(augmentation=True, dropout=True),
}
print(f"{'fold ensemble, randomizing':>26}  accuracy  log loss  mean entropy  spread of p(top class)")
for name, switches in modes.items():
    draws = randomized_probabilities(ensemble, x_test, 1 if name == "nothing (deterministic)" else SAMPLES, **switches)
    mean = draws.mean(axis=0)
    top = mean.argmax(axis=1)
    spread = draws[:, np.arange(len(top)), top].std(axis=0).mean()
    accuracy, loss = test_scores(mean)
    print(f"{name:>26}  {accuracy:8.4f}  {loss:8.4f}  {entropy(mean).mean():12.4f}  {spread:22.4f}")

# %% [markdown]
# The first row, with nothing randomized, reproduces the ensemble above. The randomized rows average `SAMPLES`
# passes: their accuracy is often close to the deterministic one, their spread (the standard
# deviation of the winning class's probability across passes) is the new information. Log loss
# may get worse: averaging randomized passes makes every prediction less confident, including the
# many that were right. Which
# variant is best on this data is an empirical question; the exported bundles of notebook 4 offer
# the same choice through `tfcv.export.Randomized(augmentation=..., mc_dropout=...)`.
#
# ## 3. Clean digits versus inputs the model was never meant to see
#
# A useful uncertainty estimate should be low on inputs like the training data and high on inputs
# unlike it. We build four kinds of bad input from the test digits and compare the predictive
# entropy of the randomized ensemble (TTA + MC dropout) on each:

# %%
rng = np.random.default_rng(SEED)
inputs = {
    "clean digits": x_test,
    "noisy digits (σ = 0.3)": np.clip(x_test + rng.normal(0.0, 0.3, x_test.shape), 0.0, 1.0).astype("float32"),
    "digits rotated 90°": np.ascontiguousarray(np.rot90(x_test, k=1, axes=(1, 2))),
    "uniform noise": rng.random(x_test.shape).astype("float32"),
    "blank images": np.zeros((25,) + x_test.shape[1:], dtype="float32"),
}
fig, axes = plt.subplots(1, len(inputs), figsize=(2 * len(inputs), 2.2))
for ax, (name, images) in zip(axes, inputs.items()):
    ax.imshow(images[1 % len(images), ..., 0], cmap="gray_r", vmin=0, vmax=1)
    ax.set_title(name, fontsize=9)
    ax.axis("off")
plt.show()

# %%
draws = {name: randomized_probabilities(ensemble, images, SAMPLES) for name, images in inputs.items()}
entropies = {name: entropy(d.mean(axis=0)) for name, d in draws.items()}

fig, ax = plt.subplots(figsize=(9, 3.5))
bins = np.linspace(0.0, np.log(10), 31)
for name, values in entropies.items():
    ax.hist(values, bins=bins, density=True, histtype="step", linewidth=2, label=name)
ax.set_xlabel("predictive entropy (nats); log(10) = 2.30 is a uniform guess")
ax.set_ylabel("density")
ax.set_title("How unsure is the randomized fold ensemble?")
ax.legend(fontsize=8)
plt.show()

print(f"{'':>24}  median entropy  most frequent prediction  AUROC vs clean")
for name, values in entropies.items():
    predicted = draws[name].mean(axis=0).argmax(axis=1)
    common = np.bincount(predicted, minlength=10).argmax()
    share = np.mean(predicted == common)
    auroc = ""
    if name != "clean digits":
        is_bad = np.r_[np.zeros(len(entropies["clean digits"])), np.ones(len(values))]
        auroc = f"{roc_auc_score(is_bad, np.r_[entropies['clean digits'], values]):.3f}"
    print(f"{name:>24}  {np.median(values):14.3f}  {f'{common} ({share:.0%} of them)':>24}  {auroc:>14}")

# %% [markdown]
# The AUROC column asks: if you pick one clean digit and one bad input at random, how often does
# the bad one get the higher entropy? 0.5 is chance, 1.0 is a perfect separation.
#
# Read the histograms with some suspicion. Entropy separates some kinds of bad input better than
# others, and a model trained only on digits has never been told what "not a digit" looks like:
# on some inputs it is confidently wrong (the "most frequent prediction" column shows what it
# thinks a blank image is). Uncertainty from ensembles and randomization is a useful signal for
# routing inputs to a human or a fallback, not a guarantee.
#
# ## 4. Which digits is the model unsure about?
#
# Sorting the clean test digits by entropy shows what the model finds hard. Red titles mark
# mistakes.

# %%
clean = draws["clean digits"].mean(axis=0)
clean_entropy = entropies["clean digits"]
order = np.argsort(clean_entropy)
shown = {"least sure": order[::-1][:8], "most sure": order[:8]}

fig, axes = plt.subplots(2, 8, figsize=(12, 3.8))
for row, (title, indices) in zip(axes, shown.items()):
    for ax, i in zip(row, indices):
        predicted = clean[i].argmax()
        ax.imshow(x_test[i, ..., 0], cmap="gray_r")
        ax.set_title(f"true {y_test[i]}, pred {predicted}\np={clean[i, predicted]:.2f} H={clean_entropy[i]:.2f}",
                     fontsize=8, color="red" if predicted != y_test[i] else "black")
        ax.axis("off")
    row[0].text(-0.3, 0.5, title, transform=row[0].transAxes, rotation=90, va="center", ha="right")
plt.show()

# %% [markdown]
# If uncertainty is meaningful, the model's mistakes concentrate among its least sure predictions.
# One way to use that: answer only when the entropy is below a threshold and pass the rest on.
# The curve shows the accuracy on the answered digits as the model answers fewer of them.

# %%
correct = clean.argmax(axis=1) == y_test
coverage = np.arange(1, len(order) + 1) / len(order)
accuracy_answered = np.cumsum(correct[order]) / np.arange(1, len(order) + 1)
fig, ax = plt.subplots(figsize=(6, 3.5))
ax.plot(coverage, accuracy_answered)
ax.set_xlabel("fraction of test digits answered (most sure first)")
ax.set_ylabel("accuracy on the answered digits")
ax.set_title("Abstaining on the least sure predictions")
ax.grid(alpha=0.3)
plt.show()
print(f"accuracy on all digits {correct.mean():.4f}; "
      f"on the 80% the model is most sure about {accuracy_answered[int(0.8 * len(order)) - 1]:.4f}")

# %% [markdown]
# ## 5. Calibrated and guaranteed: temperatures, conformal sets, shifts
#
# Entropy ranks inputs from sure to unsure, but is a probability of 0.9 right nine times out of
# ten? Two tools fix the numbers themselves, both fitted on the **out-of-fold predictions**
# (every training digit predicted by the fold model that never saw it), so no held-out digit is
# spent on them:
#
# - a **temperature** `T`: every served probability becomes `softmax(log(p) / T)`, with `T`
#   chosen to minimise the out-of-fold log loss (`T < 1` sharpens, `T > 1` softens);
# - **conformal prediction sets**: instead of one class, a set of classes that contains the true
#   one with probability at least `1 - alpha` (here 90%), as long as new digits come from the same
#   distribution as the training digits. We use the RAPS score: the simplest score (LAC, the
#   default) gives an accurate model one class per set almost always, while RAPS lets a set grow
#   when the model hesitates between classes, which is what we want to watch here.
#
# `export_saved_model` fits both and writes them into the TF Serving bundle: the signatures apply
# the temperatures, and a new signature `predict_set` returns the sets.

# %%
import tempfile

from tfcv.bundle import read_metadata
from tfcv.export import Conformal, Randomized, export_saved_model

bundle_dir = tempfile.mkdtemp(prefix="tfcv-notebook-03-")
path = export_saved_model(
    result, f"{bundle_dir}/digits", randomized=Randomized(SAMPLES), warmup=False,
    calibration="temperature", conformal=Conformal(alpha=0.1, method="raps"),
    calibration_data=(x_train, y_train),  # predict_randomized's temperature randomizes each fold model on its own fold
)
meta = read_metadata(path)
for name, fitted in meta["calibration"]["oof"].items():
    print(f"{name:>18}: T = {fitted['temperature']:.3f}; out-of-fold log loss {fitted['before']['nll']:.4f} -> "
          f"{fitted['after']['nll']:.4f}, ECE {fitted['before']['ece']:.4f} -> {fitted['after']['ece']:.4f}")

# %% [markdown]
# The **reliability diagram** bins the test digits by the model's confidence and plots how often it
# was right in each bin; a calibrated model follows the diagonal. The legend gives the expected
# calibration error (ECE), the average gap.

# %%
import tensorflow as tf

served = tf.saved_model.load(path).signatures


def call(signature, images):
    """A signature's outputs as NumPy arrays, as a TF Serving client gets them."""
    outputs = served[signature](**{meta["input_spec"]["name"]: tf.constant(images)})
    return {name: value.numpy() for name, value in outputs.items()}


calibrated_probabilities = call("serving_default", x_test)[meta["output_names"][0]]
fig = tfcv.plots.reliability_diagram(y_test, [ensemble_probabilities, calibrated_probabilities],
                                     labels=["fold ensemble", f"with T = {meta['calibration']['temperatures']['serving_default']:.2f}"])
plt.show()
print("test log loss: before", round(test_scores(ensemble_probabilities)[1], 4),
      "after", round(test_scores(calibrated_probabilities)[1], 4))

# %% [markdown]
# Now the sets, on clean test digits and on the same digits rotated and blurred
# (`tfcv.uncertainty.shift` builds the corrupted copies from Keras' own layers; severity 1 is mild,
# 5 is severe). The guarantee is only for data like the training data: watch the coverage when
# the digits move.

# %%
def sets_of(images):
    out = call("predict_set", images)
    return out["set"], out["set_size"]


conditions = {"clean": x_test, "rotated (severity 3)": tfcv.uncertainty.shift(x_test, "rotate", 3),
              "blurred (severity 5)": tfcv.uncertainty.shift(x_test, "blur", 5)}
print(f"{'':>22}  coverage  mean set size  sets of 2+ classes")
for name, images in conditions.items():
    sets, sizes = sets_of(images)
    coverage = sets[np.arange(len(y_test)), y_test].mean()
    print(f"{name:>22}  {coverage:8.3f}  {sizes.mean():13.2f}  {np.mean(sizes > 1):18.1%}")

rotated = conditions["rotated (severity 3)"]
sets, sizes = sets_of(rotated)
shown = np.argsort(-sizes, kind="stable")[:6]
fig, axes = plt.subplots(1, len(shown), figsize=(2 * len(shown), 2.4))
for ax, i in zip(axes, shown):
    ax.imshow(rotated[i, ..., 0], cmap="gray_r", vmin=0, vmax=1)
    members = np.flatnonzero(sets[i])
    ax.set_title(f"true {y_test[i]}\nset {{{', '.join(map(str, members))}}}", fontsize=8,
                 color="black" if y_test[i] in members else "red")
    ax.axis("off")
fig.suptitle("The largest prediction sets on rotated digits", fontsize=10)
plt.show()

# %% [markdown]
# On clean digits an accurate model's sets are mostly single classes, and coverage stays above
# 90% as promised. Shifted digits are another distribution, and the promise does not cover them:
# the threshold was fitted on clean out-of-fold scores. RAPS sets grow when the model hesitates,
# which can keep coverage near 90% on moderately shifted digits (with LAC's single-class sets,
# coverage would fall with accuracy), but nothing guarantees it. A growing share of large sets is
# a warning sign worth watching in production.
#
# Finally, `tfcv.uncertainty.evaluate` puts it all in one tidy table: for each served predictor (one
# fold model, the ensemble, the randomized mean) on the clean digits and on shifted copies,
# accuracy, log loss (`nll`), ECE, how well entropy flags errors (`auroc_error`) and, for the
# predictor the sets are built on, coverage and set size. `tfcv evaluate VERSION_DIR` prints the
# same from the command line.

# %%
shifts = ["rotate:5", "blur:5"] if FAST else ["rotate:1,3,5", "noise:1,3,5", "blur:1,3,5"]
evaluation = tfcv.uncertainty.evaluate(path, x_test, y_test, shifts=shifts)
table = evaluation.to_frame()
print(table.pivot_table(index=["shift", "severity"], columns="contender", values=["accuracy", "nll"]).round(3))
fig = tfcv.plots.shift_curves(evaluation, "nll")
plt.show()

# %% [markdown]
# Read the table for your own model rather than trusting a rule of thumb. On the digits (see the
# README's uncertainty benchmark), the temperature helps on clean data and mild shifts but makes
# severe shifts more overconfident, because it was fitted on clean out-of-fold predictions; the
# randomized mean, calibrated, gives the lowest clean log loss; and no calibration fitted on
# clean data survives a strong change of distribution.

# %% [markdown]
# ## Exercises
#
# 1. Raise `SAMPLES` to 64 and rerun section 3. Which numbers move, and which are stable?
# 2. Split uncertainty into parts: the *mutual information*
#    `entropy(draws.mean(0)) - entropy(draws).mean(0)` is the part due to disagreement between
#    passes (what the model does not know) rather than ambiguity of the image itself. Does it
#    separate the bad inputs from clean digits better than the entropy?
# 3. Use each fold model alone with `randomized_probabilities`. Is one randomized model as good as
#    the fold ensemble? Is the fold ensemble plus randomization better than either?
# 4. Retrain with a spec without augmentation and dropout. What does `randomized_inference` change
#    now, and where does the remaining uncertainty come from?
# 5. Add the blank and noise images to training as an 11th class "not a digit". How do the
#    histograms change, and what new kinds of bad input would still fool the model?
