"""What /api/v1 answers: rows and service results made into JSON through the shapes in schemas.py.

Every answer passes through its shape, so an answer that drifts from the document fails loudly
(a 500 in tests) instead of quietly telling clients something else.
"""

from __future__ import annotations

from functools import cache

from flask import jsonify
from pydantic import TypeAdapter

from ...models import Digest, Subscriber
from ...services.subscriptions import event_record
from . import schemas


@cache
def _adapter(shape) -> TypeAdapter:
    return TypeAdapter(shape)


def json_of(shape, value) -> dict:
    """`value` (a row, or a dict for service results) as the JSON of `shape`; raises if it does not fit."""
    adapter = _adapter(shape)
    return adapter.dump_python(adapter.validate_python(value, from_attributes=True), mode="json")


def error(code: int, message: str, field: str | None = None):
    body = schemas.Error(error=message) if field is None else schemas.Error(error=message, field=field)
    return jsonify(body), code


def subscriber_with_consent_json(subscriber: Subscriber) -> dict:
    return json_of(schemas.SubscriberWithConsent,
                   {**_fields(subscriber, schemas.Subscriber),
                    "consent_events": [event_record(event) for event in subscriber.events]})


def subscriber_created_json(subscriber: Subscriber, message: str) -> dict:
    return json_of(schemas.SubscriberCreated, {**_fields(subscriber, schemas.Subscriber), "message": message})


def digest_json(digest: Digest) -> dict:
    return json_of(schemas.Digest, digest)


def page_json(shape, rows: list, limit: int) -> dict:
    """{"items", "next_after_id"} of the first `limit` rows (one more was asked for, to know if
    another page follows): next_after_id is null on the last page."""
    more = len(rows) > limit
    rows = rows[:limit]
    return json_of(shape, {"items": rows, "next_after_id": rows[-1].id if more else None})


def _fields(row, shape) -> dict:
    return {name: getattr(row, name) for name in shape.model_fields}
