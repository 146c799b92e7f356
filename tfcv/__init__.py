"""tfcv: honest cross-validation and TF Serving export for Keras 3."""

__version__ = "0.1.0"

from tfcv import callbacks, data, datasets, export, layers, models, plots  # noqa: E402
from tfcv.builder import ModelBuilder, ModelSpec, build_model  # noqa: E402
from tfcv.crossval import CrossValidator, CVResult  # noqa: E402
from tfcv.export import export_saved_model  # noqa: E402
from tfcv.folds import FoldPlan  # noqa: E402

__all__ = [
    "CVResult",
    "CrossValidator",
    "FoldPlan",
    "ModelBuilder",
    "ModelSpec",
    "build_model",
    "callbacks",
    "data",
    "datasets",
    "export",
    "export_saved_model",
    "layers",
    "models",
    "plots",
]
