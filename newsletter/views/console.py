"""The operator console: login, the dashboard, API tokens, operators and the audit log.

Subscribers, articles and digests have blueprints of their own (console_*.py) under /console.
"""

from __future__ import annotations

from datetime import timedelta
from urllib.parse import urlsplit

from flask import Blueprint, current_app, flash, redirect, render_template, request, url_for
from flask_login import current_user, login_user, logout_user
from sqlalchemy import func, select

from ..auth import public, requires
from ..clock import now
from ..errors import InvalidInput
from ..extensions import db, limiter
from ..models import (
    ApiToken,
    AuditEvent,
    ConsentEvent,
    ConsentKind,
    Delivery,
    Digest,
    Operator,
    Role,
    Subscriber,
    SubscriberStatus,
)
from ..services import delivery, operators

bp = Blueprint("console", __name__, url_prefix="/console")


def _login_rate_limit() -> str:
    return current_app.config["LOGIN_RATE_LIMIT"]


def _safe_next(target: str | None) -> str:
    # Only a path on this site: never an open redirect to another host.
    # Browsers read "/\\host" as "//host": backslashes and control characters are refused too.
    if (target and target.startswith("/") and not target.startswith("//") and "\\" not in target
            and target.isprintable() and not urlsplit(target).netloc):
        return target
    return url_for("console.dashboard")


@bp.route("/login", methods=["GET", "POST"])
@limiter.limit(_login_rate_limit, methods=["POST"])
@public
def login():
    if request.method == "POST":
        try:
            operator = operators.authenticate(request.form.get("email", ""), request.form.get("password", ""),
                                              request.remote_addr, now())
        except operators.LoginRefused:
            return render_template("console/login.html", error="Wrong email or password, or the account is "
                                   "locked for a while after too many failures.")
        login_user(operator)
        return redirect(_safe_next(request.args.get("next")))
    return render_template("console/login.html", error=None)


@bp.post("/logout")
@public
def logout():
    if current_user.is_authenticated:
        operators.log_out(current_user, request.remote_addr, now())
    logout_user()
    return redirect(url_for("console.login"))


@bp.get("/")
@requires(Role.VIEWER)
def dashboard():
    today = now().replace(hour=0, minute=0, second=0, microsecond=0)
    days = [today - timedelta(days=n) for n in range(29, -1, -1)]
    since = days[0]
    by_status = dict(db.session.execute(select(Subscriber.status, func.count()).group_by(Subscriber.status)).all())
    per_day = {
        "signups": _per_day(ConsentEvent.occurred_at, since,
                            ConsentEvent.kind.in_([ConsentKind.CONFIRMED, ConsentKind.IMPORTED])),
        "unsubscribes": _per_day(ConsentEvent.occurred_at, since, ConsentEvent.kind == ConsentKind.UNSUBSCRIBED),
        "deliveries": _per_day(Delivery.sent_at, since),
    }
    digests = db.session.scalars(select(Digest).order_by(Digest.id.desc()).limit(10)).all()
    return render_template(
        "console/dashboard.html",
        by_status={status.value: by_status.get(status, 0) for status in SubscriberStatus},
        days=days, per_day=per_day,
        digests=[(digest, delivery.counts(digest.id)) for digest in digests],
    )


def _per_day(column, since, *conditions) -> dict:
    """Counts per UTC day since `since`. The few rows of 30 days are bucketed here, which reads the
    same on SQLite and PostgreSQL (their date functions differ)."""
    counts: dict = {}
    for (moment,) in db.session.execute(select(column).where(column >= since, *conditions)):
        day = moment.date()
        counts[day] = counts.get(day, 0) + 1
    return counts


@bp.route("/tokens", methods=["GET", "POST"])
@requires(Role.VIEWER)
def tokens():
    created = None
    if request.method == "POST":
        try:
            record, created = operators.create_api_token(current_user, request.form.get("name", ""), now())
        except InvalidInput as error:
            flash(error.message, "error")
    mine = db.session.scalars(select(ApiToken).where(ApiToken.operator_id == current_user.id)
                              .order_by(ApiToken.id.desc())).all()
    return render_template("console/tokens.html", tokens=mine, created=created)


@bp.post("/tokens/<int:token_id>/revoke")
@requires(Role.VIEWER)
def revoke_token(token_id):
    try:
        operators.revoke_api_token(current_user, token_id, request.remote_addr, now())
        flash("Token revoked.", "notice")
    except InvalidInput as error:
        flash(error.message, "error")
    return redirect(url_for("console.tokens"))


@bp.route("/operators", methods=["GET", "POST"])
@requires(Role.ADMIN)
def operator_list():
    if request.method == "POST":
        try:
            created = operators.create_operator(request.form.get("email", ""), request.form.get("role", ""),
                                                request.form.get("password", ""), now(), by=current_user,
                                                ip=request.remote_addr)
            flash(f"Operator {created.email} created.", "notice")
        except InvalidInput as error:
            flash(error.message, "error")
    everyone = db.session.scalars(select(Operator).order_by(Operator.email)).all()
    return render_template("console/operators.html", operators=everyone, roles=[r.value for r in Role])


@bp.post("/operators/<int:operator_id>/deactivate")
@requires(Role.ADMIN)
def deactivate_operator(operator_id):
    try:
        operator = operators.deactivate_operator(operator_id, current_user, request.remote_addr, now())
        flash(f"{operator.email} can no longer log in.", "notice")
    except InvalidInput as error:
        flash(error.message, "error")
    return redirect(url_for("console.operator_list"))


@bp.get("/audit")
@requires(Role.ADMIN)
def audit_log():
    events = db.session.scalars(select(AuditEvent).order_by(AuditEvent.id.desc()).limit(200)).all()
    return render_template("console/audit.html", events=events)
