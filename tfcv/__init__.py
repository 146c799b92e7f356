"""tfcv: honest cross-validation and TF Serving export for Keras 3."""

import importlib as _importlib

__version__ = "0.1.0"

# The public API, imported on first use (PEP 562) so that `import tfcv` and
# `tfcv --help` do not pay for TensorFlow. Public name -> module that defines
# it; a name equal to its module's last part is the module itself.
_EXPORTS = {
    "CVResult": "tfcv.result",
    "CrossValidator": "tfcv.crossval",
    "FoldPlan": "tfcv.folds",
    "ModelBuilder": "tfcv.builder",
    "ModelSpec": "tfcv.spec",
    "SpecError": "tfcv.spec",
    "SpecTypeError": "tfcv.spec",
    "SpecValueError": "tfcv.spec",
    "build_model": "tfcv.builder",
    "compare": "tfcv.comparison",
    "nested_cv": "tfcv.tuning",
    "export_saved_model": "tfcv.export",
    "callbacks": "tfcv.callbacks",
    "data": "tfcv.data",
    "datasets": "tfcv.datasets",
    "export": "tfcv.export",
    "layers": "tfcv.layers",
    "models": "tfcv.models",
    "plots": "tfcv.plots",
    "preprocessing": "tfcv.preprocessing",
    "sources": "tfcv.sources",
    "tuning": "tfcv.tuning",
    "uncertainty": "tfcv.uncertainty",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    module_name = _EXPORTS.get(name)
    if module_name is None:
        raise AttributeError(f"module 'tfcv' has no attribute {name!r}")
    module = _importlib.import_module(module_name)
    value = module if module_name == f"tfcv.{name}" else getattr(module, name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return [*__all__, "__version__"]
