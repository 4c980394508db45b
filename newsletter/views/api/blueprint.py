"""The one blueprint of /api/v1 and what all its routes share: JSON errors, the audit, the document.

Callers send bearer tokens in a header (or nothing, for signup), never our session cookie: a
cross-site form has nothing to ride on, so there is no CSRF token to check.
"""

from __future__ import annotations

from datetime import datetime

from flask import Blueprint, current_app, g, got_request_exception, jsonify, request
from werkzeug.exceptions import HTTPException

from ...auth import public
from ...errors import InvalidInput
from ...extensions import csrf, db
from ...services import operators
from .openapi import openapi_document
from .representations import error

bp = Blueprint("api", __name__, url_prefix="/api/v1")
csrf.exempt(bp)

INTERNAL_ERROR = "Internal error: the request could not be completed. Please try again later."


@bp.errorhandler(InvalidInput)
def invalid_input(problem: InvalidInput):
    return error(400, problem.message, problem.field)


@bp.errorhandler(Exception)
def unexpected(exception: Exception):
    if isinstance(exception, HTTPException):
        return exception  # 404, 405, 429 have JSON answers of their own (views/errors.py)
    # Whatever the route had begun writing is undone before anything else uses the session.
    db.session.rollback()
    app = current_app._get_current_object()
    got_request_exception.send(app, _async_wrapper=app.ensure_sync, exception=exception)
    app.log_exception((type(exception), exception, exception.__traceback__))
    return error(500, INTERNAL_ERROR)


@bp.get("/openapi.json")
@public
def openapi_json():
    return jsonify(openapi_document())


def audit(action: str, target: str | None, detail: dict | None, clock: datetime) -> None:
    """Records the change that the route just made, by the token's operator, and commits it."""
    operators.audit(g.operator, f"api.{action}", target, detail, request.remote_addr, clock)
    db.session.commit()
