"""The Keras and TensorFlow internals tfcv relies on, in one place.

Every name here is private to Keras or TensorFlow (or an experimental
switch) and has no public equivalent that does the same job. Each function
says why tfcv needs it; each was checked against Keras 3.5 - 3.15 and
TensorFlow 2.16 - 2.21. When an internal is missing, the caller gets a
visible fallback (a warning or a slower path), never a silent one.

To find every use: `grep -rn "_compat\\." tfcv/`.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import keras


def flatten_layers(layer: keras.layers.Layer, *, include_self: bool = True) -> list:
    """Every layer inside `layer`, recursively (nested models and the
    sublayers a custom layer tracks as attributes).

    `Model.layers` lists only the direct layers of a model, and a plain
    `Layer` has no public list of the layers it holds; Keras' own tracking
    (`Layer._flatten_layers`) is the one complete walk.
    """
    walk = getattr(layer, "_flatten_layers", None)
    if walk is not None:
        return list(walk(include_self=include_self))
    warnings.warn(
        "This Keras version has no Layer._flatten_layers; tfcv walks `Model.layers` instead and may miss "
        "sublayers held by custom layers.",
        RuntimeWarning,
        stacklevel=2,
    )
    found = [layer] if include_self else []
    for inner in getattr(layer, "layers", []):
        found.extend(flatten_layers(inner, include_self=True))
    return found


def call_with_captures(function: Any, flat_inputs: list, captured_inputs: list) -> Any:
    """Runs a traced `tf.types.experimental.ConcreteFunction` with other
    tensors in place of what it captured.

    The stacked strategy traces fold 0's train step once and runs every
    other fold's copy through the same graph by rebinding the captured
    variable handles; TensorFlow exposes the rebinding only as the private
    `ConcreteFunction._call_flat(args, captured_inputs)` (TF 2.16 - 2.21).
    Callers check `can_call_with_captures` first and otherwise trace each copy.

    `tfcv serve` calls a loaded signature the same way, with its own
    captures, to skip binding keyword arguments on every request; without
    `_call_flat` it calls by keyword (and says so).
    """
    return function._call_flat(flat_inputs, captured_inputs=captured_inputs)


def can_call_with_captures(function: Any) -> bool:
    """Whether `call_with_captures` works with this TensorFlow."""
    return callable(getattr(function, "_call_flat", None))


def symbolic_build(model: keras.Model, batch_spec: Any) -> bool:
    """Creates a compiled model's metric variables from a batch's
    `element_spec`, before the first traced train step.

    Without a distribution strategy Keras creates them while it traces the
    first train step, and TensorFlow then traces that step a second time (a
    `tf.function` that creates variables is traced again). Keras does the
    early build itself through the private `Model._symbolic_build`.

    Returns:
        `True` if the variables were built now; `False` if Keras will build
        them at the first trace (correct, one trace slower).
    """
    build = getattr(model, "_symbolic_build", None)
    if build is None:
        return False
    try:
        build(data_batch=batch_spec)
    except Exception as error:  # noqa: BLE001 - whatever fails, Keras' own build-at-trace still works
        warnings.warn(
            f"Keras could not build the metrics of model {model.name!r} ahead of training ({error}); "
            "they are built at the first train step instead, which traces that step twice.",
            RuntimeWarning,
            stacklevel=2,
        )
        return False
    return True


def symbolic_build_alike(models: list, batch_spec: Any) -> None:
    """`symbolic_build` of every model in `models`, functional models built by
    the same function (the stacked folds' copies): the symbolic forward pass
    that gives the predictions' shapes runs once, for the first, and serves
    every copy whose outputs have the same shapes and dtypes; each copy's
    metric and loss variables are then created from them as Keras'
    `Model._symbolic_build` creates them (through its private
    `compute_metrics`/`_compute_loss` path). That forward pass is most of a
    build's cost (5 copies of the digits CNN: 0.36 s of profiled CPU).
    Anything else is built by `symbolic_build`.
    """
    try:
        from keras.src import backend, tree
        from keras.src.trainers.data_adapters import data_adapter_utils
    except ImportError:
        backend = None

    def outputs(model):
        try:
            return [(tuple(o.shape), o.dtype) for o in model.outputs]
        except (AttributeError, ValueError, TypeError):
            return None

    first = models[0]
    reference = outputs(first)
    if backend is None or reference is None or not all(layer.built for layer in first._flatten_layers()):
        for model in models:
            symbolic_build(model, batch_spec)
        return

    def symbolic(spec):
        return None if spec is None else backend.KerasTensor(spec.shape, backend.standardize_dtype(spec.dtype))

    x, y, sample_weight = data_adapter_utils.unpack_x_y_sample_weight(tree.map_structure(symbolic, batch_spec))
    try:
        y_pred = backend.compute_output_spec(first, x, training=False)
    except Exception:  # noqa: BLE001 - the per-model build says what went wrong
        y_pred = None
    for model in models:
        alike = (
            y_pred is not None and outputs(model) == reference
            and all(layer.built for layer in model._flatten_layers())
            and getattr(model, "_compile_metrics", None) is not None
        )
        try:
            if not alike:
                raise LookupError("not built alike")
            if not model._compile_metrics.built:
                backend.compute_output_spec(model.compute_metrics, x, y, y_pred, sample_weight=sample_weight)
            if model._compile_loss is not None and not model._compile_loss.built:
                backend.compute_output_spec(
                    model._compute_loss, x, y, y_pred, sample_weight=sample_weight, training=False
                )
        except Exception:  # noqa: BLE001 - Keras' own build says what went wrong, or builds at the first trace
            symbolic_build(model, batch_spec)
            continue
        if model.optimizer is not None and not model.optimizer.built:
            model.optimizer.build(model.trainable_variables)
        model._post_build()


def reset_initial_epoch(model: keras.Model) -> None:
    """Forgets the epoch `keras.callbacks.BackupAndRestore` restored.

    The callback stores it on the model (`model._initial_epoch`) and every
    later `fit` of that model starts there; a model reused for the next
    fold must start at epoch 0.
    """
    if hasattr(model, "_initial_epoch"):
        model._initial_epoch = None


def call_input(layer: keras.layers.Layer) -> Any:
    """The tensor (or list of tensors) `layer` was first called on in the
    graph of the model that holds it.

    `Layer.input` answers this for a layer, but a nested functional or
    Sequential model overrides `input` with its own `keras.Input`; its call
    in the outer graph is recorded only in the private `_inbound_nodes`.
    """
    nodes = getattr(layer, "_inbound_nodes", None)
    if not nodes:
        return layer.input
    tensors = list(nodes[0].input_tensors)
    return tensors[0] if len(tensors) == 1 else tensors


def nodes_by_depth(model: keras.Model) -> tuple[keras.Model, dict] | None:
    """`(graph, {depth: [node, ...]})` of a functional or Sequential model,
    or `None` for a subclassed one.

    The export's randomized signature splits a model at its first random
    layer so the deterministic prefix runs once per input, not once per
    sample; that needs the layer graph's nodes, which Keras keeps private
    (`Functional._nodes_by_depth`; a Sequential model's graph is its
    private `_functional`). Node objects expose `operation`,
    `input_tensors` and `output_tensors`.
    """
    graph = getattr(model, "_functional", None) if isinstance(model, keras.Sequential) else model
    nodes = getattr(graph, "_nodes_by_depth", None)
    if graph is None or not nodes:
        return None
    return graph, nodes


def tensorboard_profiles_batches(callback: keras.callbacks.TensorBoard) -> bool:
    """Whether a TensorBoard callback profiles a range of batches.

    `profile_batch` is parsed into the private `_start_batch`/`_stop_batch`;
    a profiling callback needs the per-batch hooks, which decides whether a
    whole epoch may run in one graph call.
    """
    return getattr(callback, "_start_batch", 0) != 0


def enable_op_determinism() -> None:
    """TensorFlow's process-wide op-determinism switch (still under
    `tf.config.experimental` in TF 2.21): with it, two runs with the same
    seed on CPU give the same scores."""
    import tensorflow as tf

    tf.config.experimental.enable_op_determinism()


def without_graph_rewrites(function: Callable) -> Callable:
    """`function`, called with Grappler's graph optimizer switched off.

    Grappler spends seconds rewriting the K-copy stacked graph and makes its
    epochs no faster. The switch is an experimental process-wide option, so
    it is set and restored around each call.
    """
    import functools

    import tensorflow as tf

    @functools.wraps(function)
    def call(*args, **kwargs):
        before = tf.config.optimizer.get_experimental_options().get("disable_meta_optimizer", False)
        tf.config.optimizer.set_experimental_options({"disable_meta_optimizer": True})
        try:
            return function(*args, **kwargs)
        finally:
            tf.config.optimizer.set_experimental_options({"disable_meta_optimizer": before})

    return call


def replace_call(cls: type, call: Callable) -> Callable:
    """Replaces `cls.call` process-wide and returns the method it replaced.

    Keras has one `training` flag for every layer; Monte-Carlo dropout at
    inference needs dropout layers to train while BatchNormalization does
    not. `tfcv.layers.randomized_inference` therefore wraps the `call` of
    the dropout classes while a context is open (reference-counted across
    threads) and restores them with `restore_call` when the last one closes.
    """
    original = vars(cls)["call"]
    cls.call = call
    return original


def restore_call(cls: type, original: Callable) -> None:
    """Undoes `replace_call`."""
    cls.call = original


def session_callable(session: Any, feeds: list[str], fetches: list[str]) -> Callable:
    """A callable running a TF1 `tf.compat.v1.Session` from feeds to fetches
    (tensor names), as TF Serving runs TF1 SavedModels.

    TF Serving feeds a TF1 graph whatever shape the request has and lets the
    ops decide; Python's `Session.run` refuses any shape the placeholder does
    not declare. The private `Session._make_callable_from_options` (TF 2.16 -
    2.21) goes straight to C++'s `Session::MakeCallable`, as TF Serving does;
    without it, `Session.run` is used and undeclared shapes are refused.
    """
    make = getattr(session, "_make_callable_from_options", None)
    if make is not None:
        from tensorflow.core.protobuf import config_pb2

        call = make(config_pb2.CallableOptions(feed=feeds, fetch=fetches))
        return lambda *values: call(*values)
    warnings.warn(
        "This TensorFlow has no Session._make_callable_from_options; TF1 models are run with Session.run, "
        "which refuses input shapes their placeholders do not declare.",
        RuntimeWarning,
        stacklevel=2,
    )
    graph = session.graph
    feed_tensors = [graph.as_graph_element(name) for name in feeds]
    fetch_tensors = [graph.as_graph_element(name) for name in fetches]
    return lambda *values: session.run(fetch_tensors, dict(zip(feed_tensors, values, strict=True)))
