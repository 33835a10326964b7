"""The one exception type the SDK raises, and which failures are worth a retry."""

from __future__ import annotations

import grpc

# Codes that mean the request itself is wrong or not allowed: retrying the
# same request gives the same answer.
_FINAL = {
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.PERMISSION_DENIED,
    grpc.StatusCode.UNAUTHENTICATED,
    grpc.StatusCode.UNIMPLEMENTED,
    grpc.StatusCode.OUT_OF_RANGE,
    grpc.StatusCode.ALREADY_EXISTS,
}


class RaftqError(Exception):
    """A call to a raftq node failed.

    ``code`` is the gRPC status code; ``details`` the node's message, which
    says what to change (a field, a role, an address).
    """

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(f"{code.name}: {details}")
        self.code = code
        self.details = details

    @property
    def retryable(self) -> bool:
        """Whether the same call may succeed later (an election, a restart,
        backpressure)."""
        return self.code not in _FINAL

    @classmethod
    def from_rpc(cls, error: grpc.RpcError) -> RaftqError:
        code = error.code() if hasattr(error, "code") else grpc.StatusCode.UNKNOWN
        details = error.details() if hasattr(error, "details") else str(error)
        return cls(code or grpc.StatusCode.UNKNOWN, details or "")
