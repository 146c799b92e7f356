"""SavedModel bundles for TensorFlow Serving: `export_saved_model`, `Randomized`, `verify`.

A bundle is one version directory in TF Serving's layout::

    base_path/<version>/saved_model.pb
                        variables/
                        assets.extra/tf_serving_warmup_requests
                        assets.extra/tfcv.json

with up to three `tensorflow/serving/predict` signatures:

- `serving_default`: the deterministic prediction (for a `CVResult`, the
  mean of the fold models).
- `predict_folds` (`CVResult` only): every fold model's output, stacked on
  axis 1.
- `predict_randomized`: `samples` randomized forward passes in one
  vectorized graph, reduced to `mean`, `std` and, for classifiers,
  `predictive_entropy`, `mutual_information` and `agreement`.
- `predict_set` (with `conformal=Conformal(...)`, classifiers): conformal
  prediction sets; `predict_interval` (regressors): CV+ intervals.

`calibration="temperature"` fits a temperature per signature on the
out-of-fold predictions and applies it inside the signature.

The layout itself (reading and writing versions, signature defs, metadata,
warmup records, `models.config`) lives in `tfcv.bundle`, shared with
`tfcv.serving`; this package builds, checks, publishes and describes.
"""

from tfcv.bundle import (
    ASSETS_EXTRA,
    METADATA_FILE,
    PREDICT_METHOD,
    SERVING_DEFAULT,
    WARMUP_FILE,
    BundleError,
    existing_versions,
    read_signature_defs,
    write_model_config,
)
from tfcv.export._calibrated import PREDICT_INTERVAL, PREDICT_SET, Conformal
from tfcv.export._describe import describe
from tfcv.export._publish import export_saved_model
from tfcv.export._randomized import Randomized
from tfcv.export._signatures import PREDICT_FOLDS, PREDICT_RANDOMIZED
from tfcv.export._verify import verify

__all__ = [
    "ASSETS_EXTRA",
    "METADATA_FILE",
    "PREDICT_FOLDS",
    "PREDICT_INTERVAL",
    "PREDICT_METHOD",
    "PREDICT_RANDOMIZED",
    "PREDICT_SET",
    "SERVING_DEFAULT",
    "WARMUP_FILE",
    "BundleError",
    "Conformal",
    "Randomized",
    "describe",
    "existing_versions",
    "export_saved_model",
    "read_signature_defs",
    "verify",
    "write_model_config",
]
