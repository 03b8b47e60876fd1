"""API errors and the one place that turns any error into the API's error body."""

from __future__ import annotations

import logging

from flask import Flask, jsonify
from werkzeug.exceptions import HTTPException

from engine.errors import DefinitionInvalid, EngineError, NotWaiting, StateCorrupt, TaskNotReady

log = logging.getLogger(__name__)


class ApiError(Exception):
    """An error with an HTTP status, a snake_case code, one clear sentence and details."""

    status = 400
    code = "bad_request"

    def __init__(
        self, message: str, *, code: str | None = None, status: int | None = None, details: dict | None = None
    ):
        super().__init__(message)
        self.message = message
        self.code = code or self.code
        self.status = status or self.status
        self.details = details or {}


class BadRequest(ApiError):
    status, code = 400, "bad_request"


class Unauthorized(ApiError):
    status, code = 401, "unauthorized"


class Forbidden(ApiError):
    status, code = 403, "forbidden"


class NotFound(ApiError):
    status, code = 404, "not_found"


class Conflict(ApiError):
    status, code = 409, "conflict"


class Invalid(ApiError):
    status, code = 422, "invalid"


def error_body(code: str, message: str, details: dict | None = None) -> dict:
    """The API's error document."""
    return {"error": {"code": code, "message": message, "details": details or {}}}


_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "too_large",
    415: "unsupported_media_type",
    422: "invalid",
    429: "too_many_requests",
}


def engine_error_status(exc: EngineError) -> int:
    """The HTTP status an engine error stands for."""
    if isinstance(exc, DefinitionInvalid):
        return 422
    if isinstance(exc, (TaskNotReady, NotWaiting)):
        return 409
    if isinstance(exc, StateCorrupt):
        return 500
    return 422


def register(app: Flask) -> None:
    """Install the handlers that give every error the API's shape (and never a bare 500 for bad input)."""

    @app.errorhandler(ApiError)
    def _api_error(exc: ApiError):
        return jsonify(error_body(exc.code, exc.message, exc.details)), exc.status

    @app.errorhandler(EngineError)
    def _engine_error(exc: EngineError):
        status = engine_error_status(exc)
        if status >= 500:
            log.exception("engine failure", exc_info=exc)
        return jsonify(error_body(exc.code, exc.message, exc.as_details())), status

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException):
        code = _HTTP_CODES.get(exc.code or 500, "error")
        message = exc.description or exc.name
        if exc.code == 413:
            message = "The request body is too large."
        elif exc.code == 404:
            message = "No such resource; check the URL."
        elif exc.code == 405:
            message = "This method is not allowed on this resource."
        response = jsonify(error_body(code, message))
        return response, exc.code or 500

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception):
        log.exception("unexpected error", exc_info=exc)
        return jsonify(
            error_body(
                "internal_error", "The server failed to handle the request; it has been logged and nothing was changed."
            )
        ), 500
