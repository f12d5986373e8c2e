"""The one exception services raise for a refused request. Consumers turn it into an error
frame (`code`, `detail`), views into a form error or an HTTP status."""

from __future__ import annotations


class ServiceError(Exception):
    def __init__(self, code: str, detail: str = "", *, status: int = 400) -> None:
        super().__init__(detail or code)
        self.code = code
        self.detail = detail or code
        self.status = status


class NotAllowed(ServiceError):
    def __init__(self, detail: str = "not allowed", code: str = "forbidden") -> None:
        super().__init__(code, detail, status=403)
