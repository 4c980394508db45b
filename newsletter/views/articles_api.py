"""POST /api/v1/articles: the site pushes its articles.

Accepted with an operator's API token (editor or admin), or with the site-wide API_TOKEN setting,
which came first and stays for sites that already use it.
"""

import hmac
from functools import wraps

from flask import Blueprint, current_app, g, jsonify, request

from ..auth import api_requires
from ..clock import now
from ..errors import InvalidInput
from ..extensions import csrf, db
from ..models import Role
from ..services import articles
from ..services.operators import audit

bp = Blueprint("articles_api", __name__, url_prefix="/api/v1")
# Called by servers with a bearer token, never by browsers with our cookie: no CSRF token to check.
csrf.exempt(bp)

MAX_ARTICLES = 1000  # per request
MAX_BODY_BYTES = 5 * 1024 * 1024
SEND_JSON = ("Send JSON (Content-Type: application/json): an array of "
             "{url, title, summary, author, image_url, published_at}, or one such object.")


def editor_or_site_token(view):
    by_operator = api_requires(Role.EDITOR)(view)

    @wraps(view)
    def wrapper(*args, **kwargs):
        site_token = current_app.config.get("API_TOKEN")
        if site_token and _bearer_token_matches(site_token):
            g.operator = None
            return view(*args, **kwargs)
        return by_operator(*args, **kwargs)

    wrapper.required_role = Role.EDITOR
    return wrapper


@bp.post("/articles")
@editor_or_site_token
def post_articles():
    if (request.content_length or 0) > MAX_BODY_BYTES:
        return jsonify(error=f"The request is too large (at most {MAX_BODY_BYTES // (1024 * 1024)} MB)."), 413
    data = request.get_json(silent=True)
    if data is None:
        return jsonify(error=SEND_JSON), 400
    if isinstance(data, list) and len(data) > MAX_ARTICLES:
        return jsonify(error=f"Too many articles in one request (at most {MAX_ARTICLES})."), 413
    try:
        report = articles.import_json(data, "api", now())
    except InvalidInput as error:
        return jsonify(error=error.message), 400
    body = report.as_json()
    if report.created or report.updated:
        audit(g.operator, "api.articles.import", None,
              {"created": body["created"], "updated": body["updated"],
               "token": "operator" if g.operator else "API_TOKEN"}, request.remote_addr, now())
        db.session.commit()
    if not report.imported:
        return jsonify(error="No valid article in the request.", **body), 400
    return jsonify(body), 201 if report.created else 200


def _bearer_token_matches(token: str) -> bool:
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(given.strip().encode(), token.encode())
