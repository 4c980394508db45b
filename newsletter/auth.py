"""Who may do what. Console views use the session (Flask-Login); API views a bearer token.

Every protected view declares the least role it needs with `requires` or `api_requires`; the
role is kept on the view function (`required_role`) so a test can check every route of the URL
map against every role, and a new route cannot be forgotten.
"""

from __future__ import annotations

from functools import wraps

from flask import abort, g, jsonify, redirect, request, url_for
from flask_login import LoginManager, current_user

from .clock import now
from .extensions import db
from .models import Operator, Role

login_manager = LoginManager()
login_manager.login_view = "console.login"
login_manager.login_message = "Please log in to see that page."


@login_manager.user_loader
def _load_operator(session_id: str):
    # "id:version" (Operator.get_id): a cookie from before the last logout, password change or
    # deactivation carries an old version and opens nothing, even if it was copied.
    operator_id, _, version = session_id.partition(":")
    if not (operator_id.isdigit() and version.isdigit()):
        return None
    operator = db.session.get(Operator, int(operator_id))
    if operator is None or not operator.active or operator.session_version != int(version):
        return None
    return operator


def requires(role: Role):
    def decorate(view):
        @wraps(view)
        def wrapper(*args, **kwargs):
            if not current_user.is_authenticated:
                return redirect(url_for("console.login", next=request.full_path))
            if not current_user.role.allows(role):
                abort(403)
            return view(*args, **kwargs)

        wrapper.required_role = role
        return wrapper

    return decorate


def bearer_token() -> str | None:
    """The token of an `Authorization: Bearer <token>` header, or None without one."""
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def api_operator() -> Operator | None:
    from .services.operators import operator_for_token

    token = bearer_token()
    return None if token is None else operator_for_token(token, now())


def api_requires(role: Role):
    def decorate(view):
        @wraps(view)
        def wrapper(*args, **kwargs):
            operator = api_operator()
            if operator is None:
                response = jsonify(error="Authentication required: send 'Authorization: Bearer <API token>'.")
                response.headers["WWW-Authenticate"] = 'Bearer realm="newsletter"'
                return response, 401
            if not operator.role.allows(role):
                return jsonify(error=f"Your role ({operator.role.value}) may not do this; it needs {role.value}."), 403
            g.operator = operator
            return view(*args, **kwargs)

        wrapper.required_role = role
        return wrapper

    return decorate


def public(view):
    """Marks a view under /console or /api/v1 that anybody may use (login, signup, the spec)."""
    view.required_role = None
    return view
