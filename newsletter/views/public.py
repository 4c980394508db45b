"""Pages for visitors: the signup form (own page and embeddable), confirm, unsubscribe."""

from flask import Blueprint, abort, current_app, redirect, render_template, request, url_for

from ..clock import now
from ..errors import InvalidInput, InvalidToken, UsedToken
from ..extensions import csrf, limiter
from ..services import bot_traps, signup_requests, subscriptions
from ..services.terms import current_terms, terms_by_id
from .context import request_context

bp = Blueprint("public", __name__)

FORMS = {
    # form id: (template, page after signup)
    "subscribe": ("subscribe/page.html", "public.check_email"),
    "embed": ("subscribe/embed.html", "public.embed_check_email"),
}


def _signup_rate_limit() -> str:
    return current_app.config["SIGNUP_RATE_LIMIT"]


# One budget per IP address across every way to sign up (page, embed, API).
signup_limit = limiter.shared_limit(_signup_rate_limit, scope="signup", methods=["POST"])


@bp.get("/")
def index():
    return render_template("index.html")


@bp.get("/terms")
def terms():
    version = request.args.get("version")
    shown = terms_by_id(version) if version else current_terms(now())
    if shown is None:
        abort(404)
    return render_template("terms.html", terms=shown)


@bp.route("/subscribe", methods=["GET", "POST"])
@signup_limit
def subscribe():
    return _signup_form("subscribe")


# The embed is framed by other sites, where the browser does not send our session cookie, so the
# session-bound CSRF token cannot work there; the signed form token (bot_traps) guards it instead.
@bp.route("/embed", methods=["GET", "POST"])
@signup_limit
@csrf.exempt
def embed():
    return _signup_form("embed")


def _signup_form(form_id: str):
    template, done_endpoint = FORMS[form_id]
    clock = now()
    if request.method == "GET":
        source = request.args.get("source") or request.referrer or request.url
        return _render_form(template, current_terms(clock), {"source": source}, {})

    form = request.form
    terms = terms_by_id(form.get("terms_version"))
    try:
        bot_traps.check_honeypot(form.get(bot_traps.HONEYPOT_FIELD))
        bot_traps.check_form_token(form.get("form_token"), clock)
        if terms is None:
            raise InvalidInput("form", "This form is out of date. Please reload the page and try again.")
        source = f"{form_id}: {form.get('source', '')}".strip()
        signup_requests.record(form.get("email"), form.get("name"), form.get("consent"), terms,
                               request_context(source), clock)
    except InvalidInput as error:
        return _render_form(template, terms or current_terms(clock), form, {error.field: error.message}), 400
    return redirect(url_for(done_endpoint), code=303)


def _render_form(template, terms, values, errors):
    return render_template(template, terms=terms, values=values, errors=errors,
                           form_token=bot_traps.form_token(now()), honeypot=bot_traps.HONEYPOT_FIELD)


@bp.get("/subscribe/check-your-email")
def check_email():
    return render_template("subscribe/check_email.html")


@bp.get("/embed/check-your-email")
def embed_check_email():
    return render_template("subscribe/check_email.html", embedded=True)


@bp.get("/embed.js")
def embed_script():
    return current_app.send_static_file("embed.js")


@bp.route("/confirm/<token>", methods=["GET", "POST"])
def confirm(token):
    clock = now()
    try:
        if request.method == "GET":  # link scanners follow GETs: show a button, change nothing
            subscriber = subscriptions.subscriber_for_confirm_token(token, clock)
            return render_template("subscribe/confirm.html", subscriber=subscriber)
        subscriptions.confirm(token, request_context("confirm-link"), clock)
    except UsedToken as error:
        return render_template("subscribe/link_problem.html", message=str(error), used=True), 200
    except InvalidToken as error:
        return render_template("subscribe/link_problem.html", message=str(error), used=False), 400
    return render_template("subscribe/confirmed.html")


ONE_CLICK_BODY = "List-Unsubscribe=One-Click"


@bp.route("/unsubscribe/<token>", methods=["GET", "POST"])
@csrf.exempt  # only for the RFC 8058 one-click POST; the button form is checked below
def unsubscribe(token):
    clock = now()
    one_click = request.method == "POST" and request.form.get("List-Unsubscribe") == "One-Click"
    try:
        if request.method == "GET":
            subscriber = subscriptions.subscriber_for_unsubscribe_token(token, clock)
            return render_template("subscribe/unsubscribe.html", subscriber=subscriber)
        if not one_click:
            csrf.protect()
        subscriptions.unsubscribe(token, request_context("one-click" if one_click else "unsubscribe-page"),
                                  clock)
    except InvalidToken as error:
        return render_template("subscribe/link_problem.html", message=str(error), used=False), 400
    if one_click:
        # RFC 8058: the mail client posts with no cookies and wants a plain 200, not a redirect.
        return "You have been unsubscribed.\n", 200, {"Content-Type": "text/plain; charset=utf-8"}
    return render_template("subscribe/unsubscribed.html", token=token)
