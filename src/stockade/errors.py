"""The one error tree of Stockade.

    StockadeError                      500, exit 1
    ├── ValidationError                422, exit 2   bad input: names object, field, problem
    ├── NotFoundError                  404, exit 3
    ├── ConflictError                  409, exit 4   e.g. deleting a group a policy still uses
    ├── Unauthorized                   401, exit 5
    ├── Forbidden                      403, exit 6
    │   └── QuotaExceeded              403, exit 6   a namespace would hold more than its quota allows
    ├── TimeoutError_                  504, exit 7   e.g. `apply --wait` ran out of time
    ├── ControllerUnavailable          503, exit 8   the CLI or an agent cannot reach the controller
    ├── DataplaneError                 500, exit 9   a kernel command failed (cmd, returncode, stderr)
    ├── LabError                       500, exit 10  the lab could not be built or inspected
    ├── Gone                           410, exit 11  a watch resumed from a revision the event log no longer holds: relist
    ├── PolicyTestFailed               422, exit 12  `stockade test`: some expected verdicts did not hold
    ├── PayloadTooLarge                413, exit 13  a body or a count over the controller's limits
    └── TooManyRequests                429, exit 14  this client failed authentication too often; retry after a while

Each class knows its HTTP status and its CLI exit code, so the API's exception
handler and the CLI map errors through one table each and never parse strings.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


class StockadeError(Exception):
    http_status: int = 500
    exit_code: int = 1
    code: str = "internal"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def to_dict(self) -> dict[str, Any]:
        return {"error": self.code, "message": self.message}


@dataclass(frozen=True)
class FieldProblem:
    """One problem in one field of one object: `Workload shop/web-1: spec.ips[0]: not an IP address`."""

    object_ref: str
    field: str
    problem: str

    def __str__(self) -> str:
        where = f"{self.object_ref}: " if self.object_ref else ""
        return f"{where}{self.field}: {self.problem}" if self.field else f"{where}{self.problem}"


class ValidationError(StockadeError):
    http_status = 422
    exit_code = 2
    code = "invalid"

    def __init__(self, problems: list[FieldProblem] | FieldProblem) -> None:
        self.problems = problems if isinstance(problems, list) else [problems]
        super().__init__("; ".join(str(p) for p in self.problems))

    @classmethod
    def single(cls, object_ref: str, field_name: str, problem: str) -> "ValidationError":
        return cls(FieldProblem(object_ref, field_name, problem))

    def to_dict(self) -> dict[str, Any]:
        return {
            "error": self.code,
            "message": self.message,
            "problems": [
                {"object": p.object_ref, "field": p.field, "problem": p.problem}
                for p in self.problems
            ],
        }


class NotFoundError(StockadeError):
    http_status = 404
    exit_code = 3
    code = "not_found"


class ConflictError(StockadeError):
    http_status = 409
    exit_code = 4
    code = "conflict"


class Unauthorized(StockadeError):
    http_status = 401
    exit_code = 5
    code = "unauthorized"


class Forbidden(StockadeError):
    http_status = 403
    exit_code = 6
    code = "forbidden"


class QuotaExceeded(Forbidden):
    """A write that would make a namespace hold more workloads, addresses or policies than its quota."""

    code = "quota_exceeded"


class TimeoutError_(StockadeError):
    http_status = 504
    exit_code = 7
    code = "timeout"


class ControllerUnavailable(StockadeError):
    http_status = 503
    exit_code = 8
    code = "unavailable"


class DataplaneError(StockadeError):
    exit_code = 9
    code = "dataplane"

    def __init__(self, cmd: list[str], returncode: int, stderr: str) -> None:
        self.cmd = cmd
        self.returncode = returncode
        self.stderr = stderr
        super().__init__(f"{' '.join(cmd)} exited {returncode}: {stderr.strip()}")


class LabError(StockadeError):
    exit_code = 10
    code = "lab"


class Gone(StockadeError):
    """The watch asked for events the bounded event log no longer holds; the client must relist."""

    http_status = 410
    exit_code = 11
    code = "gone"


class PayloadTooLarge(StockadeError):
    """A request body or a count (objects per apply, rules per policy) over the controller's limits."""

    http_status = 413
    exit_code = 13
    code = "too_large"


class TooManyRequests(StockadeError):
    """The client failed authentication more often than the controller allows, or asked for more
    expensive answers at once than it computes; try again in `retry_after` seconds."""

    http_status = 429
    exit_code = 14
    code = "rate_limited"

    def __init__(self, message: str, retry_after: int = 1) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class PolicyTestFailed(StockadeError):
    """Expectations were checked and some did not hold: the CI gate's "no" (bad input is a ValidationError)."""

    http_status = 422
    exit_code = 12
    code = "policy_test_failed"

    def __init__(self, passed: int, failed: int) -> None:
        self.passed = passed
        self.failed = failed
        super().__init__(f"{failed} of {passed + failed} expectations failed")


ERRORS_BY_CODE: dict[str, type[StockadeError]] = {
    cls.code: cls
    for cls in (
        StockadeError,
        ValidationError,
        NotFoundError,
        ConflictError,
        Unauthorized,
        Forbidden,
        QuotaExceeded,
        TimeoutError_,
        ControllerUnavailable,
        LabError,
        Gone,
        PayloadTooLarge,
        TooManyRequests,
    )
}


def error_from_response(status: int, body: dict[str, Any]) -> StockadeError:
    """Rebuild the typed error the controller raised, on the client side."""
    code = str(body.get("error", ""))
    message = str(body.get("message", body))
    if code == ValidationError.code:
        problems = [
            FieldProblem(p.get("object", ""), p.get("field", ""), p.get("problem", ""))
            for p in body.get("problems", [])
        ] or [FieldProblem("", "", message)]
        return ValidationError(problems)
    cls = ERRORS_BY_CODE.get(code)
    if cls is None:
        cls = {401: Unauthorized, 403: Forbidden, 404: NotFoundError, 409: ConflictError,
               410: Gone, 422: ValidationError, 429: TooManyRequests, 503: ControllerUnavailable}.get(status, StockadeError)
        if cls is ValidationError:
            return ValidationError.single("", "", message)
    return cls(message)
