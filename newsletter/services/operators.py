"""Operators: accounts with roles, argon2id passwords, lockout, API tokens, and the audit log."""

from __future__ import annotations

import hashlib
import json
import secrets
from datetime import datetime, timedelta
from functools import cache

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from flask import current_app
from sqlalchemy import and_, bindparam, case, null, or_, select, update

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
    password_hash = _hash_new_password(password)
    if db.session.scalar(select(Operator.id).where(Operator.email == address)) is not None:
        raise InvalidInput("email", f"An operator with the address {address} exists already.")
    operator = Operator(email=address, role=parse_role(role), password_hash=password_hash,
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
    end_sessions(operator)
    audit(by, "operator.deactivate", f"operator:{operator.id}", None, ip, now)
    db.session.commit()
    return operator


def _hash_new_password(password: str) -> str:
    if len(password) < MIN_PASSWORD_LENGTH:
        raise InvalidInput("password", f"The password must have at least {MIN_PASSWORD_LENGTH} characters.")
    return _hasher.hash(password)


def verify_password(password_hash: str, password: str) -> bool:
    try:
        return _hasher.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


@cache
def _dummy_hash() -> str:
    # What an unknown address or a locked account is checked against: the same argon2 work as a real check.
    return _hasher.hash(secrets.token_urlsafe(16))


def authenticate(email: str, password: str, ip: str | None, now: datetime) -> Operator:
    """The operator, or LoginRefused. LOGIN_MAX_FAILURES attempts without a success lock the account a while.

    Every path runs the same statements and one argon2 verification, so the time taken tells
    nothing about the address; the attempt is counted before the password is checked, so parallel
    guesses cannot get more than LOGIN_MAX_FAILURES checks.
    """
    try:
        address = normalize_email(email)
    except InvalidInput:
        address = None
    operator = db.session.scalar(select(Operator).where(Operator.email == address)) if address else None
    operator_id, password_hash = (operator.id, operator.password_hash) if operator else (None, None)
    may_check = _count_attempt(operator_id, now)
    if operator is None:
        verify_password(_dummy_hash(), password)
        audit(None, "login.unknown", None, None, ip, now)  # not the address: people type passwords there
        db.session.commit()
        raise LoginRefused()
    if not may_check:
        verify_password(_dummy_hash(), password)
        audit(operator, "login.locked", f"operator:{operator_id}", None, ip, now)
        db.session.commit()
        raise LoginRefused()
    if not verify_password(password_hash, password):
        audit(operator, "login.failed", f"operator:{operator_id}", None, ip, now)
        db.session.commit()
        raise LoginRefused()
    if not operator.active:
        raise LoginRefused()
    if _hasher.check_needs_rehash(password_hash):
        operator.password_hash = _hasher.hash(password)
    operator.failed_logins = 0
    operator.locked_until = None
    operator.last_login_at = now
    audit(operator, "login", f"operator:{operator_id}", None, ip, now)
    db.session.commit()
    return operator


def _count_attempt(operator_id: int | None, now: datetime) -> bool:
    """Count a login attempt in one statement, before its password is checked; whether it may be checked.

    Concurrent attempts each get their own number from the database (never a lost increment);
    the LOGIN_MAX_FAILURES-th locks the account, later ones are refused unchecked until the lock
    is over, when counting starts again. A success resets the count.
    """
    limit = current_app.config["LOGIN_MAX_FAILURES"]
    lockout_ends = now + timedelta(seconds=current_app.config["LOGIN_LOCKOUT_SECONDS"])
    lock_over = and_(Operator.locked_until.is_not(None), Operator.locked_until <= now)
    attempt = case((lock_over, 1), else_=Operator.failed_logins + 1)
    locked_until = case(
        (and_(attempt >= limit, or_(Operator.locked_until.is_(None), lock_over)),
         bindparam("lockout_ends", lockout_ends, type_=Operator.locked_until.type)),
        (lock_over, null()),
        else_=Operator.locked_until,
    )
    row = db.session.execute(
        update(Operator).where(Operator.id == operator_id)
        .values(failed_logins=attempt, locked_until=locked_until)
        .returning(Operator.failed_logins, Operator.locked_until)
        .execution_options(synchronize_session=False)
    ).one_or_none()
    db.session.commit()  # other attempts see this one's number now, not after its argon2 check
    if row is None:
        return False
    number, locked = row
    # Locked by an earlier attempt (not this one, the limit-th) means: refused unchecked.
    return number <= limit and (locked is None or (number == limit and locked == lockout_ends))


def end_sessions(operator: Operator) -> None:
    """Every session cookie issued to the operator so far stops working. Joins the caller's transaction."""
    operator.session_version = Operator.session_version + 1  # in SQL: two at once both count


def log_out(operator: Operator, ip: str | None, now: datetime) -> None:
    """Logging out ends every session of the operator, also a copy of the cookie made before."""
    end_sessions(operator)
    audit(operator, "logout", f"operator:{operator.id}", None, ip, now)
    db.session.commit()


def change_password(operator: Operator, password: str, now: datetime, by: Operator | None = None,
                    ip: str | None = None) -> None:
    """A new password; every session of the operator ends (whoever knew the old one is logged out)."""
    operator.password_hash = _hash_new_password(password)
    end_sessions(operator)
    audit(by or operator, "operator.password", f"operator:{operator.id}", None, ip, now)
    db.session.commit()


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
