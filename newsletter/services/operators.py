"""Operators: accounts with roles, argon2id passwords, lockout, API tokens, and the audit log."""

from __future__ import annotations

import hashlib
import json
import secrets
from datetime import datetime, timedelta

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from flask import current_app
from sqlalchemy import select

from ..errors import InvalidInput
from ..extensions import db
from ..models import ApiToken, AuditEvent, Operator, Role
from ..validation import normalize_email

_hasher = PasswordHasher()  # argon2id with argon2-cffi's (RFC 9106 low-memory) defaults
MIN_PASSWORD_LENGTH = 12
TOKEN_PREFIX = "nlt_"


class LoginRefused(Exception):
    """Wrong email or password, or a locked account. The message never says which."""


def parse_role(value: str) -> Role:
    try:
        return Role(value)
    except ValueError:
        raise InvalidInput("role", f"Unknown role {value!r}: use admin, editor or viewer.") from None


def create_operator(email: str, role: str, password: str, now: datetime, by: Operator | None = None,
                    ip: str | None = None) -> Operator:
    address = normalize_email(email)
    if len(password) < MIN_PASSWORD_LENGTH:
        raise InvalidInput("password", f"The password must have at least {MIN_PASSWORD_LENGTH} characters.")
    if db.session.scalar(select(Operator.id).where(Operator.email == address)) is not None:
        raise InvalidInput("email", f"An operator with the address {address} exists already.")
    operator = Operator(email=address, role=parse_role(role), password_hash=_hasher.hash(password),
                        active=True, failed_logins=0, created_at=now)
    db.session.add(operator)
    db.session.flush()
    audit(by, "operator.create", f"operator:{operator.id}", {"email": address, "role": operator.role.value}, ip, now)
    db.session.commit()
    return operator


def deactivate_operator(operator_id: int, by: Operator, ip: str | None, now: datetime) -> Operator:
    """The account can no longer log in, and its session and API tokens stop working.
    Nobody deactivates themselves: the last admin could lock everyone out."""
    operator = db.session.get(Operator, operator_id)
    if operator is None or operator.id == by.id:
        raise InvalidInput("operator", "You cannot deactivate that account.")
    operator.active = False
    audit(by, "operator.deactivate", f"operator:{operator.id}", None, ip, now)
    db.session.commit()
    return operator


def authenticate(email: str, password: str, ip: str | None, now: datetime) -> Operator:
    """The operator, or LoginRefused. Failures count; enough of them lock the account a while."""
    try:
        address = normalize_email(email)
    except InvalidInput:
        raise LoginRefused() from None
    operator = db.session.scalar(select(Operator).where(Operator.email == address))
    if operator is None:
        _hasher.hash(password)  # the same work as a real check: timing tells nothing
        raise LoginRefused()
    if operator.locked_until is not None and operator.locked_until > now:
        audit(operator, "login.locked", f"operator:{operator.id}", None, ip, now)
        db.session.commit()
        raise LoginRefused()
    try:
        _hasher.verify(operator.password_hash, password)
    except (VerificationError, InvalidHashError):
        operator.failed_logins += 1
        if operator.failed_logins >= current_app.config["LOGIN_MAX_FAILURES"]:
            operator.locked_until = now + timedelta(seconds=current_app.config["LOGIN_LOCKOUT_SECONDS"])
            operator.failed_logins = 0
        audit(operator, "login.failed", f"operator:{operator.id}", None, ip, now)
        db.session.commit()
        raise LoginRefused() from None
    if not operator.active:
        raise LoginRefused()
    if _hasher.check_needs_rehash(operator.password_hash):
        operator.password_hash = _hasher.hash(password)
    operator.failed_logins = 0
    operator.locked_until = None
    operator.last_login_at = now
    audit(operator, "login", f"operator:{operator.id}", None, ip, now)
    db.session.commit()
    return operator


def _token_sha256(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def create_api_token(operator: Operator, name: str, now: datetime) -> tuple[ApiToken, str]:
    """The stored record and the token itself, which is shown once and never stored."""
    name = (name or "").strip()
    if not name or len(name) > 100:
        raise InvalidInput("name", "Give the token a name of 1 to 100 characters.")
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    record = ApiToken(operator_id=operator.id, name=name, token_sha256=_token_sha256(token),
                      prefix=token[:12], created_at=now)
    db.session.add(record)
    db.session.flush()
    audit(operator, "api_token.create", f"api_token:{record.id}", {"name": name}, None, now)
    db.session.commit()
    return record, token


def revoke_api_token(operator: Operator, token_id: int, ip: str | None, now: datetime) -> None:
    record = db.session.get(ApiToken, token_id)
    if record is None or (record.operator_id != operator.id and operator.role is not Role.ADMIN):
        raise InvalidInput("token", "No such token.")
    if record.revoked_at is None:
        record.revoked_at = now
        audit(operator, "api_token.revoke", f"api_token:{record.id}", None, ip, now)
        db.session.commit()


def operator_for_token(token: str, now: datetime) -> Operator | None:
    record = db.session.scalar(select(ApiToken).where(ApiToken.token_sha256 == _token_sha256(token)))
    if record is None or record.revoked_at is not None or not record.operator.active:
        return None
    if record.last_used_at is None or now - record.last_used_at > timedelta(minutes=1):
        record.last_used_at = now  # at most once a minute: reads stay cheap
        db.session.commit()
    return record.operator


def audit(operator: Operator | None, action: str, target: str | None, detail: dict | None,
          ip: str | None, now: datetime) -> None:
    """Record an action. Joins the caller's transaction: it commits with the change it describes."""
    db.session.add(AuditEvent(operator_id=operator.id if operator else None, action=action, target=target,
                              detail=json.dumps(detail, ensure_ascii=False) if detail else None,
                              ip=ip, occurred_at=now))
