"""POST /api/v1/articles: the site pushes its articles (token-protected)."""

from flask import Blueprint

from ..extensions import csrf

bp = Blueprint("articles_api", __name__, url_prefix="/api/v1")
csrf.exempt(bp)
