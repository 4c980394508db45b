from flask import current_app, jsonify, render_template, request
from flask_login import current_user
from flask_wtf.csrf import CSRFError

from .. import metrics
from ..request_bodies import describe_size

SIGNUP_ENDPOINTS = {"public.subscribe", "public.embed", "api.subscribe"}


def _wants_json() -> bool:
    return request.path.startswith("/api/")


def _in_console() -> bool:
    return request.path == "/console" or request.path.startswith("/console/")


def _role_refusal() -> str:
    view = current_app.view_functions.get(request.endpoint)
    needed = getattr(view, "required_role", None)
    role = current_user.role.value if current_user.is_authenticated else None
    if needed is None or role is None:
        return "Your account may not open this page."
    return f"This page needs the {needed.value} role; you are {_article(role)} {role}."


def _article(word: str) -> str:
    return "an" if word[:1] in "aeiou" else "a"


def register_error_handlers(app):
    @app.errorhandler(CSRFError)
    def csrf_error(error):
        message = ("This form has expired or was not sent from our page (its security token is missing "
                   "or wrong). Please reload the page and try again.")
        return render_template("error.html", title="Please try again", message=message), 400

    @app.errorhandler(429)
    def too_many_requests(error):
        if request.endpoint in SIGNUP_ENDPOINTS:
            metrics.record_signup("refused", "rate_limited")
        message = "Too many requests from your address. Please wait a while and try again."
        if _wants_json():
            return jsonify(error=message), 429
        return render_template("error.html", title="Slow down", message=message), 429

    @app.errorhandler(413)
    def too_large(error):
        limit = request.max_content_length
        message = f"The request is too large (at most {describe_size(limit)})." if limit else "The request is too large."
        if _wants_json():
            return jsonify(error=message), 413
        return render_template("error.html", title="Too large", message=message), 413

    @app.errorhandler(403)
    def forbidden(error):
        if _wants_json():
            return jsonify(error="You may not do this."), 403
        if _in_console():
            return render_template("console/error.html", title="Not allowed", message=_role_refusal()), 403
        return error

    @app.errorhandler(404)
    def not_found(error):
        if _wants_json():
            return jsonify(error="Not found."), 404
        if _in_console():
            return render_template("console/error.html", title="Not found",
                                   message="No console page has this address, or what it showed no longer exists."), 404
        return render_template("error.html", title="Not found",
                               message="There is no page at this address."), 404

    @app.errorhandler(405)
    def method_not_allowed(error):
        if _wants_json():
            return jsonify(error=f"Method {request.method} is not allowed here."), 405
        return error
