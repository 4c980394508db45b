"""Small text rules used everywhere: cutting to a length with an ellipsis."""

ELLIPSIS = "…"


def truncate(text: str, limit: int) -> str:
    """At most `limit` characters; a cut one ends in an ellipsis, without the space before it."""
    if len(text) <= limit:
        return text
    return text[: max(limit - 1, 0)].rstrip() + ELLIPSIS
