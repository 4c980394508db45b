"""What a /api/v1 request names: a JSON body checked against its shape, a query number, a row by id.

Bad input raises InvalidInput (the blueprint answers 400 {"error", "field"}); an unknown id
answers 404 {"error"}.
"""

from __future__ import annotations

import re
from typing import TypeVar

from flask import abort, make_response, request
from pydantic import BaseModel, ValidationError

from ...errors import InvalidInput
from ...extensions import db
from .limits import MAX_ID
from .representations import error

_DIGITS = re.compile(r"[0-9]{1,19}")
Shape = TypeVar("Shape", bound=BaseModel)


def json_object(empty_ok: bool = False) -> dict:
    if empty_ok and not request.get_data():
        return {}
    data = request.get_json(silent=True)
    if not isinstance(data, dict):
        raise InvalidInput("body", "Send a JSON object (Content-Type: application/json).")
    return data


def body(shape: type[Shape], data: dict) -> Shape:
    """`data` validated against `shape`; the first field at fault raises InvalidInput."""
    try:
        return shape.model_validate(data)
    except ValidationError as invalid:
        raise _first_fault(invalid) from None


def _first_fault(invalid: ValidationError) -> InvalidInput:
    fault = invalid.errors()[0]
    cause = (fault.get("ctx") or {}).get("error")
    if isinstance(cause, InvalidInput):  # a field's own rule said no, in its own words
        return cause
    field = ".".join(str(part) for part in fault["loc"]) or "body"
    return InvalidInput(field, f"{field}: {fault['msg']}.")


def int_arg(name: str, default, low: int, high: int):
    raw = request.args.get(name)
    if raw is None or raw == "":
        return default
    if not _DIGITS.fullmatch(raw) or not low <= int(raw) <= high:
        raise InvalidInput(name, f"{name} must be a whole number from {low} to {high}.")
    return int(raw)


def found(model, ident: int, label: str):
    """The row with this id, or a 404 answer naming it."""
    row = db.session.get(model, ident) if 0 < ident <= MAX_ID else None
    if row is None:
        abort(make_response(*error(404, f"No {label} with id {ident}.")))
    return row
