"""Error reports to Sentry (or anything that speaks its protocol), started by the entry points only
when SENTRY_DSN is set. SENTRY_ENVIRONMENT and SENTRY_RELEASE are read by sentry-sdk itself."""

from __future__ import annotations


def init_error_reports(dsn: str | None) -> bool:
    """True when reports are on: unhandled errors of requests and tasks, and ERROR log records."""
    if not dsn:
        return False
    import sentry_sdk
    from sentry_sdk.integrations.celery import CeleryIntegration
    from sentry_sdk.integrations.flask import FlaskIntegration

    sentry_sdk.init(
        dsn=dsn,
        integrations=[FlaskIntegration(), CeleryIntegration()],
        # Subscribers' addresses travel in forms and query strings and sit in local variables: none leave.
        send_default_pii=False,
        max_request_body_size="never",
        include_local_variables=False,
        before_send=_without_query_string,
    )
    return True


def _without_query_string(event, hint):
    # The console searches subscribers by address in the query string (?q=...).
    request = event.get("request")
    if isinstance(request, dict) and request.get("query_string"):
        request["query_string"] = "[removed]"
    return event
