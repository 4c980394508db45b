from flask import request

from ..services.subscriptions import Context
from ..validation import _CONTROL


def request_context(source: str | None = None) -> Context:
    """Evidence of where a consent came from: IP, user agent, the page or form."""
    if source is not None:
        source = _CONTROL.sub(" ", source).strip()
    return Context(ip=request.remote_addr, user_agent=request.user_agent.string or None, source=source)
