"""Errors the server answers with: one class per TF Serving status code.

Each error carries the HTTP status of the REST API and the gRPC status code
TF Serving uses for the same failure, so both front ends report a problem
the same way.
"""

from __future__ import annotations

__all__ = [
    "DeadlineExceeded",
    "FailedPrecondition",
    "InvalidArgument",
    "NotFound",
    "PayloadTooLarge",
    "ServingError",
    "SignatureNotFound",
    "Unimplemented",
]


class ServingError(Exception):
    """A request the server cannot answer; the message is sent to the client.

    Attributes:
        http_status: `int`. Status code of the REST answer.
        grpc_code: `str`. Name of the `grpc.StatusCode` of the gRPC answer.
    """

    http_status = 500
    grpc_code = "INTERNAL"

    @property
    def message(self) -> str:
        return str(self.args[0]) if self.args else self.__class__.__name__


class InvalidArgument(ServingError):
    """A malformed request: bad JSON, wrong input name, shape or dtype."""

    http_status = 400
    grpc_code = "INVALID_ARGUMENT"


class NotFound(ServingError):
    """An unknown model or version."""

    http_status = 404
    grpc_code = "NOT_FOUND"


class SignatureNotFound(ServingError):
    """An unknown signature: 400 over REST, `FAILED_PRECONDITION` over gRPC, as TF Serving."""

    http_status = 400
    grpc_code = "FAILED_PRECONDITION"


class FailedPrecondition(ServingError):
    """A request the servable cannot run as it stands."""

    http_status = 400
    grpc_code = "FAILED_PRECONDITION"


class DeadlineExceeded(ServingError):
    """A request that took longer than `--rest_api_timeout_in_ms`."""

    http_status = 504
    grpc_code = "DEADLINE_EXCEEDED"


class PayloadTooLarge(ServingError):
    """A request body above the server's size limit."""

    http_status = 413
    grpc_code = "RESOURCE_EXHAUSTED"


class Unimplemented(ServingError):
    """A TF Serving API this server does not provide (classify, regress)."""

    http_status = 501
    grpc_code = "UNIMPLEMENTED"
