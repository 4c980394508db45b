"""/api/v1, the JSON API: one blueprint (blueprint.py), one module per resource (signup,
subscribers, articles, digests), the shapes of every body declared once (schemas.py), and the
OpenAPI document generated from them (openapi.py)."""

from . import articles, digests, signup, subscribers  # noqa: F401  (importing them adds their routes)
from .blueprint import bp

__all__ = ["bp"]
