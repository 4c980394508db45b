"""Input rules shared by every way in (the form, the embed, the JSON API, the CLI)."""

import re

from email_validator import EmailNotValidError, validate_email

from .errors import InvalidInput

MAX_EMAIL_LENGTH = 254  # RFC 5321 path limit
MAX_NAME_LENGTH = 100
# Consent must be a real yes. WTForms' BooleanField would take "off", "0" or "no" as true.
CONSENT_YES = frozenset({"y", "yes", "on", "true", "1"})
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def reject_control_characters(field: str, value: str) -> None:
    # CR/LF in a value that may reach a mail header is how header injection starts.
    if _CONTROL.search(value):
        raise InvalidInput(field, "Line breaks and control characters are not allowed here.")


def normalize_email(raw) -> str:
    if not isinstance(raw, str) or not raw.strip():
        raise InvalidInput("email", "Please enter your email address.")
    reject_control_characters("email", raw)
    value = raw.strip()
    if len(value) > MAX_EMAIL_LENGTH:
        raise InvalidInput("email", f"That email address is too long (at most {MAX_EMAIL_LENGTH} characters).")
    try:
        # No SMTPUTF8: relays that do not offer it cannot deliver a non-ASCII local part.
        result = validate_email(value, check_deliverability=False, allow_smtputf8=False)
    except EmailNotValidError as exc:
        raise InvalidInput("email", f"That email address is not valid: {exc}") from None
    # One key per mailbox in practice: providers treat the local part case-insensitively. An
    # internationalised domain is kept in its ASCII (punycode) form, which every relay accepts.
    return (result.ascii_email or result.normalized).lower()


def clean_name(raw) -> str | None:
    if raw is None:
        return None
    if not isinstance(raw, str):
        raise InvalidInput("name", "The name must be text.")
    reject_control_characters("name", raw)
    value = raw.strip()
    if len(value) > MAX_NAME_LENGTH:
        raise InvalidInput("name", f"The name is too long (at most {MAX_NAME_LENGTH} characters).")
    return value or None


def consent_given(raw) -> bool:
    if raw is True:
        return True
    return isinstance(raw, str) and raw.strip().lower() in CONSENT_YES


def raw_consent_value(raw) -> str:
    """What the visitor's browser or client actually sent, for the ledger."""
    if raw is None:
        return "(absent)"
    if isinstance(raw, bool):
        return "true" if raw else "false"
    return str(raw)[:100]
