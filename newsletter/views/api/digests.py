"""/api/v1/digests: compose a draft, read it, send it, follow and steer its delivery.

409 when the thing asked for is not possible in the digest's current state.
"""

from __future__ import annotations

from flask import jsonify, url_for

from ...auth import api_requires
from ...clock import now
from ...errors import InvalidInput
from ...models import Digest, Role
from ...services import delivery, digests
from ...services.readiness import NotReadyToSend
from . import parsing, schemas
from .blueprint import audit, bp
from .representations import digest_json, error, json_of


@bp.post("/digests")
@api_requires(Role.EDITOR)
def create_digest():
    """A draft of the articles not sent yet (or published since `since`). 409 when there is none."""
    asked = parsing.body(schemas.NewDigest, parsing.json_object(empty_ok=True))
    clock = now()
    digest = digests.create_digest(clock, subject=asked.subject, since=asked.since)
    if digest is None:
        return error(409, "No new articles: every visible article went out in an earlier digest"
                          if asked.since is None else "No article was published since then.")
    audit("digest.create", f"digest:{digest.id}", {"articles": len(digest.items)}, clock)
    response = jsonify(digest_json(digest))
    response.status_code = 201
    response.headers["Location"] = url_for(f"{bp.name}.get_digest", digest_id=digest.id)
    return response


@bp.get("/digests/<int:digest_id>")
@api_requires(Role.VIEWER)
def get_digest(digest_id):
    return jsonify(digest_json(parsing.found(Digest, digest_id, "digest")))


@bp.get("/digests/<int:digest_id>/status")
@api_requires(Role.VIEWER)
def digest_status(digest_id):
    parsing.found(Digest, digest_id, "digest")
    return jsonify(_status(digest_id))


@bp.post("/digests/<int:digest_id>/send")
@api_requires(Role.EDITOR)
def send_digest(digest_id):
    return _control(digest_id, "send", delivery.start_sending, 202)


@bp.post("/digests/<int:digest_id>/pause")
@api_requires(Role.EDITOR)
def pause_digest(digest_id):
    return _control(digest_id, "pause", delivery.pause)


@bp.post("/digests/<int:digest_id>/resume")
@api_requires(Role.EDITOR)
def resume_digest(digest_id):
    return _control(digest_id, "resume", delivery.resume)


@bp.post("/digests/<int:digest_id>/cancel")
@api_requires(Role.EDITOR)
def cancel_digest(digest_id):
    return _control(digest_id, "cancel", delivery.cancel)


def _control(digest_id: int, action: str, change, code: int = 200):
    parsing.found(Digest, digest_id, "digest")
    clock = now()
    try:
        change(digest_id, clock)
    except NotReadyToSend:
        raise  # a setting, not the digest's state: 400 naming it (the blueprint's handler)
    except InvalidInput as problem:  # the digest is not in a state this change starts from
        return error(409, problem.message)
    status = _status(digest_id)
    audit(f"digest.{action}", f"digest:{digest_id}", {"total": status["total"]} if action == "send" else None, clock)
    return jsonify(status), code


def _status(digest_id: int) -> dict:
    return json_of(schemas.DeliveryStatus, delivery.status(digest_id))
