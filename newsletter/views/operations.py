"""For load balancers, orchestrators and Prometheus: /healthz, /readyz, /metrics. Public, read-only,
outside rate limits (a probe every few seconds is no abuse) and CSRF (nothing here changes state)."""

from flask import Blueprint, Response, abort, current_app, jsonify

from .. import health, metrics
from ..clock import now
from ..extensions import csrf, db, limiter

bp = Blueprint("operations", __name__)
limiter.exempt(bp)
csrf.exempt(bp)
NO_STORE = {"Cache-Control": "no-store"}


@bp.get("/healthz")
def healthz():
    """The process is up and answers; nothing else is asked."""
    return jsonify(status="ok"), 200, NO_STORE


@bp.get("/readyz")
def readyz():
    """Ready for traffic: the database and the broker answer. 503 names what does not."""
    config = current_app.config
    timeout = config["READINESS_TIMEOUT"]
    engine, broker_url = db.engine, config["CELERY_BROKER_URL"]
    checks = health.run_checks({"database": lambda: health.check_database(engine, timeout),
                                "broker": lambda: health.check_broker(broker_url, timeout)}, timeout)
    ready = all(result == health.OK for result in checks.values())
    return jsonify(status="ok" if ready else "unavailable", checks=checks), 200 if ready else 503, NO_STORE


@bp.get("/metrics")
def prometheus_metrics():
    if not current_app.config["METRICS_ENABLED"]:
        abort(404)
    body = metrics.exposition(now(), current_app.config["PROMETHEUS_MULTIPROC_DIR"])
    return Response(body, content_type=metrics.CONTENT_TYPE, headers=NO_STORE)
