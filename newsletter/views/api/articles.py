"""/api/v1/articles: the site lists its articles, and pushes new and changed ones.

POST is accepted with an operator's API token (editor or admin), or with the site-wide API_TOKEN
setting, which came first and stays for sites that already use it.
"""

from __future__ import annotations

import hmac
from functools import wraps

from flask import current_app, g, jsonify, request
from sqlalchemy import and_, func, or_, select

from ...auth import api_requires, bearer_token
from ...clock import now
from ...errors import InvalidInput
from ...extensions import db
from ...models import Article, Role
from ...request_bodies import body_limit
from ...services import articles
from . import parsing, schemas
from .blueprint import audit, bp
from .limits import DEFAULT_PAGE, MAX_ARTICLES, MAX_BODY_BYTES, MAX_ID, MAX_PAGE
from .representations import error, json_of, page_json

SEND_JSON = ("Send JSON (Content-Type: application/json): an array of "
             "{url, title, summary, author, image_url, published_at}, or one such object.")
_SORT_TIME = func.coalesce(Article.published_at, Article.created_at)  # as digests: published, else added


def editor_or_site_token(view):
    by_operator = api_requires(Role.EDITOR)(view)

    @wraps(view)
    def wrapper(*args, **kwargs):
        site_token = current_app.config.get("API_TOKEN")
        given = bearer_token()
        if site_token and given is not None and hmac.compare_digest(given.encode(), site_token.encode()):
            g.operator = None
            return view(*args, **kwargs)
        return by_operator(*args, **kwargs)

    wrapper.required_role = Role.EDITOR
    return wrapper


@bp.get("/articles")
@api_requires(Role.VIEWER)
def list_articles():
    """Newest first (published, else added), hidden ones included and marked."""
    limit = parsing.int_arg("limit", DEFAULT_PAGE, 1, MAX_PAGE)
    after_id = parsing.int_arg("after_id", None, 1, MAX_ID)
    query = select(Article).order_by(_SORT_TIME.desc(), Article.id.desc()).limit(limit + 1)
    if after_id is not None:
        # Keyset on (time, id): the cursor is an id, its time is looked up.
        anchor = db.session.scalar(select(_SORT_TIME).where(Article.id == after_id))
        if anchor is None:
            raise InvalidInput("after_id", f"No article with id {after_id} to continue after.")
        query = query.where(or_(_SORT_TIME < anchor, and_(_SORT_TIME == anchor, Article.id < after_id)))
    return jsonify(page_json(schemas.ArticlePage, list(db.session.scalars(query)), limit))


@bp.post("/articles")
@body_limit(MAX_BODY_BYTES)
@editor_or_site_token
def post_articles():
    data = request.get_json(silent=True)
    if data is None:
        return error(400, SEND_JSON)
    if isinstance(data, list) and len(data) > MAX_ARTICLES:
        return error(413, f"Too many articles in one request (at most {MAX_ARTICLES}).")
    clock = now()
    try:
        result = articles.import_json(data, "api", clock)
    except InvalidInput as problem:  # not an article nor a list of them: no entry to name
        return error(400, problem.message)
    report = json_of(schemas.ImportReport, result.as_json())
    if result.created or result.updated:
        audit("articles.import", None, {"created": result.created, "updated": result.updated,
                                        "token": "operator" if g.operator else "API_TOKEN"}, clock)
    if not result.imported:
        return jsonify(json_of(schemas.ImportRefused, {"error": "No valid article in the request.", **report})), 400
    return jsonify(report), 201 if result.created else 200
