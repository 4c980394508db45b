"""How much of a request body the app reads, and how deep a JSON body may nest.

A body with a Content-Length over the limit is refused before a byte of it is read, and a chunked
one (gunicorn marks its input as terminated) once it passes the limit; both answer 413. The limit is MAX_CONTENT_LENGTH, and a view
that needs more declares it with @body_limit, which applies before anything reads the body (the
CSRF check reads forms before the view runs). JSON nested deeper than Python's recursion limit is
bad JSON (400), not an internal error.
"""

from __future__ import annotations

from collections.abc import Callable

from flask import Flask, Request, current_app, request
from flask.json.provider import DefaultJSONProvider
from werkzeug.exceptions import RequestEntityTooLarge
from werkzeug.utils import cached_property
from werkzeug.wsgi import LimitedStream


def body_limit(max_bytes: int) -> Callable:
    """Let one view read bodies up to `max_bytes` instead of MAX_CONTENT_LENGTH."""

    def mark(view):
        view.max_body_bytes = max_bytes
        return view

    return mark


class _CappedStream(LimitedStream):
    """A body of no stated length: more than the limit is refused (413). Werkzeug's own stream
    would stop at the limit without a word when read whole, handing on a truncated body."""

    def __init__(self, stream, limit: int):
        super().__init__(stream, limit, is_max=True)

    def readinto(self, buffer) -> int:
        if self.is_exhausted:
            self._refuse_if_more()
            return 0
        return super().readinto(buffer)

    def readall(self) -> bytes:
        data = super().readall()
        if self.is_exhausted:
            self._refuse_if_more()
        return data

    def _refuse_if_more(self) -> None:
        if self._stream.read(1):
            raise RequestEntityTooLarge()


class BoundedRequest(Request):
    @cached_property
    def stream(self):
        limit = self.max_content_length
        if limit is not None and self.content_length is None and "wsgi.input_terminated" in self.environ:
            return _CappedStream(self.environ["wsgi.input"], limit)  # chunked, as gunicorn hands it on
        return super().stream


class BoundedJSONProvider(DefaultJSONProvider):
    def loads(self, s, **kwargs):
        try:
            return super().loads(s, **kwargs)
        except RecursionError:  # the decoder gives up past the recursion limit: bad JSON, as for a parser
            raise ValueError("JSON nested too deeply") from None


def describe_size(size: int) -> str:
    for unit, factor in (("MiB", 2**20), ("KiB", 2**10)):
        if size >= factor and size % factor == 0:
            return f"{size // factor} {unit}"
    return f"{size:,} bytes"


def _apply_body_limit() -> None:
    view = current_app.view_functions.get(request.endpoint)
    limit = getattr(view, "max_body_bytes", None)
    if limit is not None:
        request.max_content_length = limit


def register_request_bodies(app: Flask) -> None:
    """Before CSRFProtect is initialised: its check reads form bodies, under the view's limit."""
    app.request_class = BoundedRequest
    app.json = BoundedJSONProvider(app)
    app.before_request(_apply_body_limit)
