"""The console's subscriber pages: the list (search, filter, keyset pages), one subscriber with
their consent ledger, and the admin's data tools: CSV import and export, GDPR export and erasure.

Viewers read; only admins move personal data in or out, or erase it. Every one of those actions is
audited and committed before the response goes out. Exports are POSTs with the CSRF token: an
export is an audited disclosure, which a link, a prefetch or another site's <img> must not trigger.
An import is a job a worker does (services/import_jobs): the upload answers at once with the job's
page, which reloads itself until the report is there; its bad rows (lines and reasons, nobody's
data) download with a plain link.
"""

from __future__ import annotations

import json

from flask import Blueprint, Response, abort, flash, redirect, render_template, request, url_for
from flask_login import current_user
from sqlalchemy import func, select

from ..auth import requires
from ..clock import now
from ..errors import InvalidInput
from ..extensions import db
from ..models import MAX_ID, Delivery, ImportJob, OutboundEmail, Role, Subscriber, SubscriberStatus
from ..request_bodies import body_limit
from ..services import exporter, gdpr, import_jobs, operators, subscriptions
from ..validation import consent_given
from ..times import iso_z

bp = Blueprint("console_subscribers", __name__, url_prefix="/console/subscribers")

PAGE_SIZE = 50
MAX_SEARCH = 254
IMPORT_REFRESH_SECONDS = 2  # how often the page of an import still running reloads itself (meta refresh: no script)
CSV_UPLOAD_MAX_BYTES = 64 * 2**20  # a list of a million addresses; the upload is spooled to disk, not held



# --- reading -------------------------------------------------------------------------------------


@bp.get("/")
@requires(Role.VIEWER)
def index():
    search = request.args.get("q", "").strip().lower()[:MAX_SEARCH]
    status = _status_filter(request.args.get("status", ""))
    conditions = []
    if search:
        conditions.append(Subscriber.email.contains(search, autoescape=True))  # addresses are stored lower-case
    if status is not None:
        conditions.append(Subscriber.status == status)
    page, older, newer = _keyset_page(conditions, _id_arg("before"), _id_arg("after"))
    by_status = dict(db.session.execute(select(Subscriber.status, func.count()).group_by(Subscriber.status)).all())
    matching = (db.session.scalar(select(func.count()).select_from(Subscriber).where(*conditions))
                if conditions else sum(by_status.values()))
    return render_template(
        "console/subscribers/index.html", subscribers=page, older=older, newer=newer, search=search,
        status=status.value if status else "", statuses=[s.value for s in SubscriberStatus],
        by_status={s.value: by_status.get(s, 0) for s in SubscriberStatus}, total=sum(by_status.values()),
        matching=matching,
    )


def _status_filter(raw: str) -> SubscriberStatus | None:
    if not raw:
        return None
    try:
        return SubscriberStatus(raw)
    except ValueError:
        flash(f"There is no status {raw[:30]!r}; showing every status.", "error")
        return None


def _keyset_page(conditions, before: int | None, after: int | None):
    """One page, newest first, and the ids to continue from: `older` (the `before` of the next
    page) and `newer` (the `after` of the previous one), None when nothing is that way.

    Keyset on the primary key: `id < before` (or `id > after` walking back) reads one page from the
    index however deep it is, where OFFSET would read and skip every row before it.
    """
    query = select(Subscriber).where(*conditions).limit(PAGE_SIZE + 1)
    if after is not None and before is None:
        rows = db.session.scalars(query.where(Subscriber.id > after).order_by(Subscriber.id)).all()
        page = list(reversed(rows[:PAGE_SIZE]))
        more_newer, more_older = len(rows) > PAGE_SIZE, _exists(conditions, Subscriber.id <= after)
    else:
        if before is not None:
            query = query.where(Subscriber.id < before)
        rows = db.session.scalars(query.order_by(Subscriber.id.desc())).all()
        page = rows[:PAGE_SIZE]
        more_older = len(rows) > PAGE_SIZE
        more_newer = before is not None and _exists(conditions, Subscriber.id >= before)
    older = page[-1].id if page and more_older else None
    newer = page[0].id if page and more_newer else None
    return page, older, newer


def _id_arg(name: str) -> int | None:
    value = request.args.get(name, "")
    if not (value.isascii() and value.isdigit() and len(value) <= 10):
        return None
    return int(value) if int(value) <= MAX_ID else None


def _exists(conditions, bound) -> bool:
    return db.session.scalar(select(Subscriber.id).where(*conditions, bound).limit(1)) is not None


@bp.get("/<int:subscriber_id>")
@requires(Role.VIEWER)
def show(subscriber_id):
    subscriber = _subscriber_or_404(subscriber_id)
    deliveries = dict(db.session.execute(select(Delivery.status, func.count())
                                         .where(Delivery.subscriber_id == subscriber_id)
                                         .group_by(Delivery.status)).all())
    emails = db.session.scalar(select(func.count()).select_from(OutboundEmail)
                               .where(OutboundEmail.subscriber_id == subscriber_id))
    return render_template("console/subscribers/show.html", subscriber=subscriber,
                           record=subscriptions.consent_record(subscriber.email),
                           deliveries={status.value: n for status, n in deliveries.items()}, emails=emails)


# --- CSV import ----------------------------------------------------------------------------------


@bp.route("/import", methods=["GET", "POST"])
@body_limit(CSV_UPLOAD_MAX_BYTES)
@requires(Role.ADMIN)
def import_form():
    if request.method == "GET":
        return render_template("console/subscribers/import.html", form={}, jobs=import_jobs.recent_jobs())
    source = request.form.get("consent_source", "").strip()
    confirmed = consent_given(request.form.get("confirmed"))
    upload = request.files.get("file")
    try:
        if not source:
            raise InvalidInput("consent_source", "Say where these people gave their consent (a form, an event, "
                                                 "the tool the list comes from): it is recorded with each of them.")
        if upload is None or not upload.filename:
            raise InvalidInput("file", "Choose a CSV file to import.")
        job = import_jobs.create_job(current_user, upload.filename, upload.stream, source, confirmed,
                                     request.remote_addr, now())
    except InvalidInput as error:
        db.session.rollback()
        flash(error.message, "error")
        return render_template("console/subscribers/import.html", form=request.form,
                               jobs=import_jobs.recent_jobs()), 400
    return redirect(url_for("console_subscribers.import_job", job_id=job.id), 303)


@bp.get("/imports/<int:job_id>")
@requires(Role.ADMIN)
def import_job(job_id):
    job = _import_job_or_404(job_id)
    return render_template("console/subscribers/import_job.html", job=job, stalled=import_jobs.is_stalled(job, now()),
                           bad_rows=import_jobs.first_bad_rows(job.id), refresh_seconds=IMPORT_REFRESH_SECONDS)


@bp.get("/imports/<int:job_id>/bad-rows.csv")
@requires(Role.ADMIN)
def import_bad_rows(job_id):
    job = _import_job_or_404(job_id)
    response = Response(exporter.bad_rows_csv(job.id), mimetype="text/csv")
    response.headers["Content-Disposition"] = f'attachment; filename="import-{job.id}-bad-rows.csv"'
    response.headers["Cache-Control"] = "no-store"
    return response


def _import_job_or_404(job_id: int) -> ImportJob:
    job = db.session.get(ImportJob, job_id) if job_id <= MAX_ID else None
    if job is None:
        abort(404)
    return job


# --- CSV export ----------------------------------------------------------------------------------


@bp.post("/export.csv")
@requires(Role.ADMIN)
def export_csv():
    clock = now()
    chunks = exporter.export_subscribers(current_user, request.remote_addr, clock)
    response = Response(chunks, mimetype="text/csv")
    response.headers["Content-Disposition"] = f'attachment; filename="subscribers-{clock:%Y%m%d-%H%M%S}.csv"'
    response.headers["Cache-Control"] = "no-store"
    return response



# --- GDPR ----------------------------------------------------------------------------------------


@bp.post("/<int:subscriber_id>/export.json")
@requires(Role.ADMIN)
def gdpr_export(subscriber_id):
    _subscriber_or_404(subscriber_id)
    data = gdpr.export_person(subscriber_id)
    clock = now()
    data["exported_at"] = (iso_z(clock) or "")
    operators.audit(current_user, "subscribers.gdpr_export", f"subscriber:{subscriber_id}", None,
                    request.remote_addr, clock)
    db.session.commit()
    response = Response(json.dumps(data, indent=2, ensure_ascii=False), mimetype="application/json")
    response.headers["Content-Disposition"] = f'attachment; filename="subscriber-{subscriber_id}.json"'
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.post("/<int:subscriber_id>/erase")
@requires(Role.ADMIN)
def erase(subscriber_id):
    subscriber = _subscriber_or_404(subscriber_id)
    typed = request.form.get("confirm_email", "").strip().lower()
    if typed != subscriber.email:
        flash("Nothing was erased: type the subscriber's email address exactly, to show it is the right "
              "person.", "error")
        return redirect(url_for("console_subscribers.show", subscriber_id=subscriber_id))
    gdpr.erase_person(subscriber_id, now(), current_user, request.remote_addr)
    flash(f"Subscriber {subscriber_id} erased with all their data. Their address is kept only as a "
          "keyed hash on the suppression list, so it is never mailed again.", "notice")
    return redirect(url_for("console_subscribers.index"))


def _subscriber_or_404(subscriber_id: int) -> Subscriber:
    subscriber = db.session.get(Subscriber, subscriber_id) if subscriber_id <= MAX_ID else None
    if subscriber is None:
        abort(404)
    return subscriber
