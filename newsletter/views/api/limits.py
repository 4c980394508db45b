"""The limits of /api/v1, in one place: the views enforce them and the OpenAPI document states them.

Some are the domain's own (the longest email, name or subject, the articles a digest carries);
they are named here so that the document imports nothing else to state them.
"""

from ...models import MAX_ID
from ...services.digests import MAX_ARTICLES as MAX_DIGEST_ARTICLES
from ...services.digests import MAX_SUBJECT_LENGTH
from ...validation import MAX_EMAIL_LENGTH, MAX_NAME_LENGTH

__all__ = ["MAX_DIGEST_ARTICLES", "MAX_SUBJECT_LENGTH", "MAX_EMAIL_LENGTH", "MAX_NAME_LENGTH", "MAX_ID",
           "DEFAULT_PAGE", "MAX_PAGE", "MAX_CONSENT_SOURCE", "MAX_ARTICLES", "MAX_BODY_BYTES"]

DEFAULT_PAGE = 100
MAX_PAGE = 500
MAX_CONSENT_SOURCE = 200
MAX_ARTICLES = 1000  # articles in one POST /articles
MAX_BODY_BYTES = 5 * 1024 * 1024  # of one POST /articles
