"""The local TF-Serving-compatible model server: REST and gRPC, as `tfcv serve`.

Example:

>>> from tfcv import serving
>>> serving.serve("digits", "models/digits")  # blocks; or `tfcv serve --model_name digits ...`
"""

from tfcv.serving.batching import Batcher, BatchingOptions
from tfcv.serving.errors import (
    InvalidArgument,
    NotFound,
    PayloadTooLarge,
    ServingError,
    Unimplemented,
)
from tfcv.serving.grpc_service import create_grpc_server
from tfcv.serving.registry import ModelConfig, ModelRegistry, read_model_config_file
from tfcv.serving.rest import create_app
from tfcv.serving.servable import Servable, Signature, TensorInfo
from tfcv.serving.server import ServerOptions, add_arguments, main, serve, serve_from_args

__all__ = [
    "Batcher",
    "BatchingOptions",
    "InvalidArgument",
    "ModelConfig",
    "ModelRegistry",
    "NotFound",
    "PayloadTooLarge",
    "Servable",
    "ServerOptions",
    "ServingError",
    "Signature",
    "TensorInfo",
    "Unimplemented",
    "add_arguments",
    "create_app",
    "create_grpc_server",
    "main",
    "read_model_config_file",
    "serve",
    "serve_from_args",
]
