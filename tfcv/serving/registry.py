"""Which model versions are served: polling, loading, warmup and switching.

`ModelRegistry` does what TF Serving's file-system source and manager do:
every `file_system_poll_wait_seconds` it lists each model's base path,
loads the versions its version policy asks for (by default only the
latest), replays their warmup requests, and only then makes them
available; versions that are no longer wanted are unloaded once a newer
one serves, so requests never find the model missing. A version that fails
to load or to warm up is reported in the version status (state `END` and
the error, as TF Serving reports it) while the previous one keeps serving;
it is tried again only when its files change. Directories whose names are
not numbers (such as the `.tfcv-tmp-*` directories of an export in
progress) are ignored.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import threading
import time
from collections.abc import Mapping, Sequence

from tensorflow_serving.apis import get_model_status_pb2

from tfcv import bundle
from tfcv.serving.batching import BatchingOptions
from tfcv.serving.errors import InvalidArgument, NotFound
from tfcv.serving.servable import Servable

__all__ = ["ModelConfig", "ModelRegistry", "read_model_config_file"]

logger = logging.getLogger("tfcv.serving")

_POLICIES = ("latest", "all", "specific")
_State = get_model_status_pb2.ModelVersionStatus.State
_UNKNOWN = get_model_status_pb2.ModelVersionStatus().status.DESCRIPTOR.fields_by_name[
    "error_code"].enum_type.values_by_name["UNKNOWN"].number


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """One served model, as an entry of TF Serving's `model_config_list`.

    Args:
        name: `str`. The model name used in URLs and `ModelSpec.name`.
        base_path: `str`. Directory whose numeric subdirectories are the
            versions.
        version_policy: `"latest"`, `"all"` or `"specific"`. Which versions
            are served. Defaults to `"latest"`.
        num_versions: `int`. How many of the newest versions `"latest"`
            serves. Defaults to `1`.
        versions: Tuple of ints. The versions `"specific"` serves.
        version_labels: Mapping of label to version, for
            `/labels/{label}` and `ModelSpec.version_label`.

    Example:

    >>> ModelConfig("digits", "models/digits")
    ModelConfig(name='digits', base_path='models/digits', version_policy='latest', ...)
    """

    name: str
    base_path: str
    version_policy: str = "latest"
    num_versions: int = 1
    versions: tuple[int, ...] = ()
    version_labels: Mapping[str, int] = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        if not isinstance(self.name, str) or not self.name or "/" in self.name or ":" in self.name:
            raise ValueError(
                f"Invalid value for argument `name`. Received: name={self.name!r}. "
                "Expected a non-empty string without '/' or ':'."
            )
        if not isinstance(self.base_path, (str, os.PathLike)) or not os.fspath(self.base_path):
            raise ValueError(
                f"Invalid value for argument `base_path`. Received: base_path={self.base_path!r}. "
                "Expected a directory path."
            )
        if self.version_policy not in _POLICIES:
            raise ValueError(
                f"Invalid value for argument `version_policy`. Received: version_policy={self.version_policy!r}. "
                f"Expected one of {_POLICIES}."
            )
        if isinstance(self.num_versions, bool) or not isinstance(self.num_versions, int) or self.num_versions < 1:
            raise ValueError(
                f"Invalid value for argument `num_versions`. Received: num_versions={self.num_versions!r}. "
                "Expected an int >= 1."
            )
        if self.version_policy == "specific" and not self.versions:
            raise ValueError(
                f"Invalid value for argument `versions`. Received: versions={self.versions!r}. "
                "Expected at least one version for version_policy='specific'."
            )
        object.__setattr__(self, "base_path", os.fspath(self.base_path))
        object.__setattr__(self, "versions", tuple(int(v) for v in self.versions))
        object.__setattr__(self, "version_labels", {str(k): int(v) for k, v in dict(self.version_labels).items()})

    def aspired(self, available: Sequence[int]) -> set[int]:
        """The versions the policy wants served, out of `available`."""
        available = sorted(available)
        if self.version_policy == "latest":
            return set(available[-self.num_versions:])
        if self.version_policy == "all":
            return set(available)
        return set(available) & set(self.versions)


def read_model_config_file(path: str | os.PathLike) -> list[ModelConfig]:
    """Reads a TF Serving `--model_config_file` (text `ModelServerConfig`).

    Args:
        path: Path of the file, e.g. `serving/models.config`.

    Returns:
        A list of `ModelConfig`, one per `config { ... }` entry. Relative
        base paths are kept as they are, i.e. relative to the working
        directory, as in TF Serving.

    Raises:
        ValueError: if the file is not a valid `model_config_list`.
    """
    try:
        proto = bundle.read_model_config(path)
    except ValueError as error:
        # TF Serving's wording, which scripts and its tests look for.
        raise ValueError(f"Error parsing text-format tensorflow.serving.ModelServerConfig: {error}") from None
    configs = []
    for entry in proto.model_config_list.config:
        policy = entry.model_version_policy
        kind = policy.WhichOneof("policy_choice") or "latest"
        configs.append(ModelConfig(
            name=entry.name,
            base_path=entry.base_path,
            version_policy=kind,
            num_versions=(policy.latest.num_versions or 1) if kind == "latest" else 1,
            versions=tuple(policy.specific.versions) if kind == "specific" else (),
            version_labels=dict(entry.version_labels),
        ))
    return configs


@dataclasses.dataclass
class _Version:
    version: int
    state: int = _State.START
    error: str = ""
    servable: Servable | None = None
    fingerprint: tuple | None = None


class ModelRegistry:
    """The served models and their versions, kept in sync with the disk.

    Args:
        configs: A `ModelConfig` or a list of them.
        file_system_poll_wait_seconds: `float`. Seconds between two scans
            of the base paths; `0` scans once, at `start()`. Defaults to `1`.
        batching: A `BatchingOptions`, or `None` to disable batching.
            Defaults to `BatchingOptions()`.
        enable_model_warmup: `bool`. Replay each version's warmup records
            before serving it. Defaults to `True`.
        metrics: A `tfcv.serving.metrics.Metrics` counting loads, or `None`.
        allow_version_labels_for_unavailable_models: `bool`. Let a reloaded
            config point a label at a version not yet available. Defaults to
            `False`, as TF Serving.

    Example:

    >>> registry = ModelRegistry(ModelConfig("digits", "models/digits"))
    >>> registry.start()
    >>> registry.get("digits").signature().predict({"image": x})
    >>> registry.stop()
    """

    def __init__(self, configs: ModelConfig | Sequence[ModelConfig], *,
                 file_system_poll_wait_seconds: float = 1.0,
                 batching: BatchingOptions | None = BatchingOptions(),  # noqa: B008 - frozen dataclass
                 enable_model_warmup: bool = True, metrics=None,
                 allow_version_labels_for_unavailable_models: bool = False):
        configs = [configs] if isinstance(configs, ModelConfig) else list(configs)
        if not configs or not all(isinstance(c, ModelConfig) for c in configs):
            raise TypeError(
                f"Invalid value for argument `configs`. Received: configs={configs!r}. "
                "Expected a ModelConfig or a non-empty list of them."
            )
        wait = file_system_poll_wait_seconds
        if isinstance(wait, bool) or not isinstance(wait, (int, float)) or wait < 0:
            raise ValueError(
                "Invalid value for argument `file_system_poll_wait_seconds`. "
                f"Received: file_system_poll_wait_seconds={wait!r}. Expected a number >= 0."
            )
        self.configs = {c.name: c for c in configs}
        self.file_system_poll_wait_seconds = float(wait)
        self.batching = batching
        self.enable_model_warmup = bool(enable_model_warmup)
        self.metrics = metrics
        self.allow_version_labels_for_unavailable_models = bool(allow_version_labels_for_unavailable_models)
        self._config_lock = threading.Lock()
        self._lock = threading.Lock()
        self._versions: dict[str, dict[int, _Version]] = {name: {} for name in self.configs}
        self._serving: dict[str, dict[int, Servable]] = {name: {} for name in self.configs}
        self._missing_reported: set[str] = set()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __repr__(self) -> str:
        return f"ModelRegistry(models={sorted(self.configs)}, file_system_poll_wait_seconds={self.file_system_poll_wait_seconds})"

    # ----------------------------------------------------------- lifecycle

    def start(self) -> None:
        """Scans the base paths once, then keeps polling in a thread."""
        self.poll()
        if self.file_system_poll_wait_seconds > 0 and self._thread is None:
            self._thread = threading.Thread(target=self._poll_forever, name="tfcv-poll", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        """Stops polling and unloads every version."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        with self._lock:
            servables = [s for versions in self._serving.values() for s in versions.values()]
            for versions in self._serving.values():
                versions.clear()
        for servable in servables:
            servable.close()

    def _poll_forever(self) -> None:
        while not self._stop.wait(self.file_system_poll_wait_seconds):
            try:
                self.poll()
            except Exception:  # noqa: BLE001 - the poller must outlive any one bad scan
                logger.exception("Polling the model base paths failed; retrying.")

    def poll(self) -> None:
        """Scans every base path once: loads, warms up, switches, unloads."""
        with self._config_lock:
            for config in list(self.configs.values()):
                self._poll_model(config)

    def reload_config(self, configs: Sequence[ModelConfig]) -> None:
        """Serves `configs` from now on, as TF Serving's config reload.

        New models are loaded at once, models no longer listed are unloaded,
        and the others take their new policy and labels.

        Raises:
            ValueError: if a label names a version that is not available
                (unless `allow_version_labels_for_unavailable_models`); the
                current config keeps serving.
        """
        configs = list(configs)
        if not configs:
            raise ValueError("A model config needs at least one model.")
        if not self.allow_version_labels_for_unavailable_models:
            for config in configs:
                with self._lock:
                    available = set(self._serving.get(config.name, {}))
                for label, version in config.version_labels.items():
                    if version not in available:
                        raise ValueError(
                            f"Request to assign label {label} to version {version} of model {config.name}, "
                            "which is not currently available for inference (see "
                            "--allow_version_labels_for_unavailable_models)."
                        )
        with self._config_lock:
            new = {c.name: c for c in configs}
            removed = [name for name in self.configs if name not in new]
            with self._lock:
                for name in new:
                    self._versions.setdefault(name, {})
                    self._serving.setdefault(name, {})
                self.configs = new
            for name in removed:
                for version in sorted(self._serving.get(name, {})):
                    self._unload(name, version)
                with self._lock:
                    self._versions.pop(name, None)
                    self._serving.pop(name, None)
            for config in new.values():
                self._poll_model(config)

    # ------------------------------------------------------------- polling

    def _poll_model(self, config: ModelConfig) -> None:
        found = self._scan(config)
        # A failed version drops out of the candidates, so the policy falls
        # back to the next version (at start-up too); each round fails at
        # least one more version or loads everything aspired.
        for _ in range(len(found) + 1):
            with self._lock:
                known = dict(self._versions[config.name])
            candidates = [
                v for v, path in found.items()
                if not (v in known and known[v].error and known[v].fingerprint == bundle.version_fingerprint(path))
            ]
            aspired = config.aspired(candidates)
            to_load = [v for v in sorted(aspired, reverse=True)
                       if v not in known or known[v].state != _State.AVAILABLE]
            if not to_load:
                break
            for version in to_load:
                self._load(config, version, found[version])
        with self._lock:
            serving = self._serving[config.name]
            aspired_available = any(v in serving for v in aspired)
            retired = [v for v in serving if v not in aspired and (aspired_available or v not in found)]
        for version in retired:
            self._unload(config.name, version)

    def _scan(self, config: ModelConfig) -> dict[int, str]:
        try:
            found = bundle.published_versions(config.base_path)
        except OSError as error:
            if config.name not in self._missing_reported:
                logger.error("No versions of model %s found: cannot list base path %s (%s).",
                             config.name, config.base_path, error.strerror or error)
                self._missing_reported.add(config.name)
            return {}
        self._missing_reported.discard(config.name)
        return found

    def _load(self, config: ModelConfig, version: int, path: str) -> None:
        record = _Version(version, state=_State.LOADING, fingerprint=bundle.version_fingerprint(path))
        with self._lock:
            self._versions[config.name][version] = record
        logger.info("Loading servable version {name: %s version: %d} from %s", config.name, version, path)
        servable = None
        warmup_seconds = None
        try:
            started = time.perf_counter()
            servable = Servable(config.name, version, path, batching=self.batching)
            load_seconds = time.perf_counter() - started
            started = time.perf_counter()
            records = servable.warmup() if self.enable_model_warmup else 0
            warmup_seconds = time.perf_counter() - started if records else None
        except Exception as error:  # noqa: BLE001 - any failure is reported, the old version keeps serving
            if servable is not None:
                servable.close()
            if self.metrics is not None:
                self.metrics.record_load(path, False)
            message = f"Loading version {version} of model {config.name} from {path} failed: {_describe(error)}"
            logger.error("%s", message)
            with self._lock:
                record.state, record.error = _State.END, message
            return
        if self.metrics is not None:
            self.metrics.record_load(path, True, warmup_seconds, load_seconds)
        with self._lock:
            record.state, record.servable = _State.AVAILABLE, servable
            self._serving[config.name] = {**self._serving[config.name], version: servable}
        logger.info("Successfully loaded servable version {name: %s version: %d} (%d warmup records replayed)",
                    config.name, version, records)

    def _unload(self, name: str, version: int) -> None:
        with self._lock:
            record = self._versions[name][version]
            record.state = _State.UNLOADING
            serving = dict(self._serving[name])
            servable = serving.pop(version)
            self._serving[name] = serving
        # Requests that already hold this servable finish on it.
        servable.close()
        with self._lock:
            record.state, record.servable = _State.END, None
        logger.info("Unloaded servable version {name: %s version: %d}", name, version)

    # -------------------------------------------------------------- lookup

    @property
    def model_names(self) -> list[str]:
        return sorted(self.configs)

    def get(self, name: str, version: int | None = None, label: str | None = None) -> Servable:
        """The servable that answers a request for `name` (and `version` or `label`).

        Args:
            name: `str`. The model name.
            version: `int` or `None` for the latest available version.
            label: `str` or `None`. A version label of the model config.

        Raises:
            NotFound: for an unknown model or version, naming it.
            InvalidArgument: for an unknown label, as TF Serving.
        """
        config = self._config(name)
        if label:
            if label not in config.version_labels:
                raise InvalidArgument(
                    f"Unrecognized servable version label: {label} for model {name}. "
                    f"Labels: {sorted(config.version_labels)}."
                )
            version = config.version_labels[label]
        with self._lock:
            serving = self._serving.get(name, {})
        if version is None:
            if not serving:
                raise NotFound(f"Servable not found for request: Latest({name}). No version of it is available.")
            return serving[max(serving)]
        if version not in serving:
            raise NotFound(
                f"Servable not found for request: Specific({name}, {version}). "
                f"Available versions: {sorted(serving)}."
            )
        return serving[version]

    def status(self, name: str, version: int | None = None,
               label: str | None = None) -> get_model_status_pb2.GetModelStatusResponse:
        """The `GetModelStatusResponse` of `name`, all versions unless one is given.

        Raises:
            NotFound: for an unknown model or version.
            InvalidArgument: for an unknown label.
        """
        config = self._config(name)
        if label:
            if label not in config.version_labels:
                raise InvalidArgument(f"Unrecognized servable version label: {label} for model {name}.")
            version = config.version_labels[label]
        with self._lock:
            records = sorted(
                (dataclasses.replace(r) for r in self._versions.get(name, {}).values()), key=lambda r: -r.version
            )
        if version is not None:
            records = [r for r in records if r.version == version]
            if not records:
                raise NotFound(f"Could not find version {version} of model {name}.")
        elif not records:
            raise NotFound(f"Could not find any versions of model {name}.")
        response = get_model_status_pb2.GetModelStatusResponse()
        for record in records:
            status = response.model_version_status.add(version=record.version, state=record.state)
            # TF Serving always reports the status, {"error_code": "OK"} included.
            status.status.SetInParent()
            if record.error:
                status.status.error_code = _UNKNOWN
                status.status.error_message = record.error
        return response

    def status_or_empty(self, name: str) -> list:
        """The `ModelVersionStatus`es of `name`, empty when it has none yet."""
        try:
            return list(self.status(name).model_version_status)
        except (NotFound, InvalidArgument):
            return []

    def _config(self, name: str) -> ModelConfig:
        if name not in self.configs:
            raise NotFound(
                f"Servable not found for request: Latest({name}). Served models: {self.model_names}."
            )
        return self.configs[name]


def parse_version(text: str) -> int:
    """Parses a version from a URL or a flag; refuses anything but digits."""
    if not bundle.is_version_name(text):
        raise InvalidArgument(f"Invalid version {text!r} in the request: expected a non-negative integer.")
    return int(text)


def _describe(error: BaseException) -> str:
    message = getattr(error, "message", None) or str(error) or type(error).__name__
    first = message.strip().splitlines()[0] if message.strip() else type(error).__name__
    return f"{type(error).__name__}: {first}"
