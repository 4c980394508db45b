"""The console's digest pages: compose, preview, test-send, send or schedule, and watch a send.

Viewers read (the list, a digest, its preview and progress); editors compose, edit, test-send,
send, schedule, pause, resume and cancel. Every change is audited in the transaction that makes it,
or, where a delivery service commits on its own, right after it.

The decisions behind them (a draft of chosen articles, editing and scheduling a draft, starting
scheduled digests, progress figures) are services: services/digests and services/delivery/progress.
"""

from __future__ import annotations

from datetime import datetime, timezone

from flask import (Blueprint, abort, current_app, flash, jsonify, make_response, redirect, render_template, request,
                   url_for)
from flask_login import current_user
from sqlalchemy import select
from werkzeug.datastructures import MultiDict

from ..auth import requires
from ..clock import now
from ..errors import InvalidInput, PermanentMailError, TransientMailError
from ..extensions import db
from ..models import Article, Digest, Role
from ..services import delivery, digests, operators
from ..times import UnknownTimeZone, find_zone, zone_or_utc

bp = Blueprint("console_digests", __name__, url_prefix="/console/digests")

PAGE_SIZE = 50
# The iframe's document is the email: inline styles and remote images, nothing else, and only we may frame it.
PREVIEW_CSP = "default-src 'none'; img-src https: http: data:; style-src 'unsafe-inline'; frame-ancestors 'self'"


# --- parsing and presentation ------------------------------------------------------------------


def local_time(value: str, zone_name: str) -> datetime:
    """A datetime-local value ("2026-11-03T08:00") read in the IANA zone `zone_name`, as aware UTC."""
    try:
        zone = find_zone(zone_name)
    except UnknownTimeZone:
        raise InvalidInput("timezone", f"Unknown time zone {zone_name!r}: use an IANA name such as "
                                       "Europe/Paris or UTC.") from None
    try:
        local = datetime.fromisoformat(value.strip())
    except ValueError:
        raise InvalidInput("when", "Give a date and a time, e.g. 2026-11-03T08:00.") from None
    if local.tzinfo is not None:
        raise InvalidInput("when", "Give the time without an offset; the time zone says where it is.")
    when = local.replace(tzinfo=zone).astimezone(timezone.utc)
    # A time skipped by a clock change (02:30 when clocks jump from 02:00 to 03:00) does not come back.
    if when.astimezone(zone).replace(tzinfo=None) != local:
        raise InvalidInput("when", f"{local:%Y-%m-%d %H:%M} does not exist in {zone.key} (the clocks "
                                   "change then); choose another time.")
    return when


# --- pages -------------------------------------------------------------------------------------



@bp.get("/")
@requires(Role.VIEWER)
def index():
    query = select(Digest).order_by(Digest.id.desc()).limit(PAGE_SIZE + 1)
    before = request.args.get("before", type=int)
    if before:
        query = query.where(Digest.id < before)
    rows = db.session.scalars(query).all()
    shown = rows[:PAGE_SIZE]
    return render_template("console/digests/index.html",
                           digests=[(digest, delivery.counts(digest.id)) for digest in shown],
                           older=shown[-1].id if len(rows) > PAGE_SIZE else None)


@bp.route("/new", methods=["GET", "POST"])
@requires(Role.EDITOR)
def compose():
    articles = digests.new_articles()
    if request.method == "GET":
        ticked = articles[: digests.MAX_ARTICLES]
        return render_template("console/digests/compose.html", articles=articles, form=_compose_defaults(articles),
                               subject=digests.default_subject(ticked) if ticked else "", intro="",
                               max_articles=digests.MAX_ARTICLES)
    clock = now()
    try:
        digest = digests.compose_draft(_chosen_in_order(request.form), request.form.get("subject", ""),
                               request.form.get("intro", ""), clock)
    except InvalidInput as error:
        db.session.rollback()
        flash(error.message, "error")
        return render_template("console/digests/compose.html", articles=articles, form=request.form,
                               subject=request.form.get("subject", ""), intro=request.form.get("intro", ""),
                               max_articles=digests.MAX_ARTICLES), 400
    operators.audit(current_user, "digest.create", f"digest:{digest.id}",
                    {"articles": [item.article_id for item in digest.items]}, request.remote_addr, clock)
    db.session.commit()
    flash(f"Draft digest {digest.id} created with {len(digest.items)} articles.", "notice")
    return redirect(url_for("console_digests.show", digest_id=digest.id))


def _compose_defaults(articles: list[Article]) -> MultiDict:
    """The form as first shown: the newest MAX_ARTICLES ticked, numbered in the listed order."""
    form = MultiDict()
    for position, article in enumerate(articles, start=1):
        if position <= digests.MAX_ARTICLES:
            form.add("article", str(article.id))
        form.add(f"position-{article.id}", str(position))
    return form


def _chosen_in_order(form) -> list[int]:
    """The ticked article ids, ordered by their position numbers (ties keep the listed order)."""
    chosen = []
    for listed, raw_id in enumerate(form.getlist("article")):
        if not raw_id.isdigit():
            raise InvalidInput("articles", "The list of articles was damaged; reload the page.")
        raw_position = form.get(f"position-{raw_id}", "").strip()
        try:
            position = int(raw_position)
        except ValueError:
            raise InvalidInput("position", f"Give each ticked article a whole number as its position "
                                           f"({raw_position or 'nothing'!r} is not one).") from None
        chosen.append((position, listed, int(raw_id)))
    return [article_id for _, _, article_id in sorted(chosen)]


@bp.get("/<int:digest_id>")
@requires(Role.VIEWER)
def show(digest_id):
    digest = _digest_or_404(digest_id)
    return render_template("console/digests/show.html", digest=digest, progress=delivery.progress(digest_id, now()),
                           editable=digest.status in digests.EDITABLE, zone=current_app.config["DIGEST_TIMEZONE"],
                           local_scheduled=_in_site_zone(digest.scheduled_for))


@bp.get("/<int:digest_id>/progress.json")
@requires(Role.VIEWER)
def progress_json(digest_id):
    _digest_or_404(digest_id)
    response = jsonify(delivery.progress(digest_id, now()))
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.post("/<int:digest_id>/edit")
@requires(Role.EDITOR)
def edit(digest_id):
    digest = _digest_or_404(digest_id)
    try:
        subject = digests.edit_draft(digest, request.form.get("subject", ""), request.form.get("intro", ""))
    except InvalidInput as error:
        flash(error.message, "error")
        return redirect(url_for("console_digests.show", digest_id=digest_id))
    _audit("digest.edit", digest_id, {"subject": subject})
    flash("Subject and introduction saved.", "notice")
    return redirect(url_for("console_digests.show", digest_id=digest_id))


@bp.get("/<int:digest_id>/preview")
@requires(Role.VIEWER)
def preview(digest_id):
    digest = _digest_or_404(digest_id)
    text = digests.preview(digest_id, now())["digest.txt"].decode("utf-8")
    return render_template("console/digests/preview.html", digest=digest, text=text)


@bp.get("/<int:digest_id>/preview.html")
@requires(Role.VIEWER)
def preview_html(digest_id):
    """The HTML body as sent, alone, for the preview page's sandboxed iframe."""
    _digest_or_404(digest_id)
    response = make_response(digests.preview(digest_id, now())["digest.html"])
    response.content_type = "text/html; charset=utf-8"
    response.headers["Content-Security-Policy"] = PREVIEW_CSP
    response.headers["X-Frame-Options"] = "SAMEORIGIN"  # for browsers without CSP level 2
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.post("/<int:digest_id>/test-send")
@requires(Role.EDITOR)
def test_send(digest_id):
    _digest_or_404(digest_id)
    clock = now()
    try:
        subject = digests.send_test_copy(digest_id, current_user.email, clock)
    except ValueError as error:  # InvalidInput (digest, address), as the CLI: SMTP_URL, DKIM settings
        flash(getattr(error, "message", str(error)), "error")
    except (TransientMailError, PermanentMailError) as error:
        flash(f"The relay did not take the test copy: {error}", "error")
    else:
        _audit("digest.test_send", digest_id, {"to": current_user.email}, clock)
        flash(f"Test copy “{subject}” sent to {current_user.email}.", "notice")
    return redirect(url_for("console_digests.show", digest_id=digest_id))


@bp.post("/<int:digest_id>/send")
@requires(Role.EDITOR)
def send(digest_id):
    _digest_or_404(digest_id)
    clock = now()
    try:
        total = delivery.start_sending(digest_id, clock)
    except InvalidInput as error:
        flash(error.message, "error")
    else:
        _audit("digest.send", digest_id, {"total": total}, clock)
        flash(f"Sending digest {digest_id} to {total:,} subscribers.", "notice")
    return redirect(url_for("console_digests.show", digest_id=digest_id))


@bp.post("/<int:digest_id>/schedule")
@requires(Role.EDITOR)
def schedule_send(digest_id):
    digest = _digest_or_404(digest_id)
    clock = now()
    zone_name = request.form.get("timezone", "").strip() or current_app.config["DIGEST_TIMEZONE"]
    try:
        when = local_time(request.form.get("when", ""), zone_name)
        digests.schedule(digest, when, clock)
    except InvalidInput as error:
        flash(error.message, "error")
        return redirect(url_for("console_digests.show", digest_id=digest_id))
    _audit("digest.schedule", digest_id, {"scheduled_for": when.isoformat(), "timezone": zone_name}, clock)
    local = when.astimezone(find_zone(zone_name))
    flash(f"Digest {digest_id} will go out at {local:%Y-%m-%d %H:%M} {zone_name} ({when:%Y-%m-%d %H:%M} UTC).",
          "notice")
    return redirect(url_for("console_digests.show", digest_id=digest_id))


@bp.post("/<int:digest_id>/pause")
@requires(Role.EDITOR)
def pause(digest_id):
    return _control(digest_id, "pause", delivery.pause, "Paused: workers stop after the messages in hand.")


@bp.post("/<int:digest_id>/resume")
@requires(Role.EDITOR)
def resume(digest_id):
    return _control(digest_id, "resume", delivery.resume, "Resumed.")


@bp.post("/<int:digest_id>/cancel")
@requires(Role.EDITOR)
def cancel(digest_id):
    return _control(digest_id, "cancel", delivery.cancel, "Cancelled: nobody else will get this digest.")


def _control(digest_id: int, action: str, change, done: str):
    _digest_or_404(digest_id)
    clock = now()
    try:
        change(digest_id, clock)
    except InvalidInput as error:  # the digest is not in a state this change starts from
        flash(error.message, "error")
    else:
        _audit(f"digest.{action}", digest_id, None, clock)
        flash(done, "notice")
    return redirect(url_for("console_digests.show", digest_id=digest_id))


def _audit(action: str, digest_id: int, detail: dict | None, clock: datetime | None = None) -> None:
    operators.audit(current_user, action, f"digest:{digest_id}", detail, request.remote_addr, clock or now())
    db.session.commit()


def _digest_or_404(digest_id: int) -> Digest:
    digest = db.session.get(Digest, digest_id)
    if digest is None:
        abort(404)
    return digest


def _in_site_zone(moment: datetime | None) -> str | None:
    if moment is None:
        return None
    zone = current_app.config["DIGEST_TIMEZONE"]
    return f"{moment.astimezone(zone_or_utc(zone)):%Y-%m-%d %H:%M} {zone}"
