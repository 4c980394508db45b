"""Errors are types. Views map them to pages and JSON; tasks map mail errors to retries."""


class InvalidInput(ValueError):
    """Bad input from a visitor or an operator. `field` names the input, `message` is for people."""

    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field = field
        self.message = message


class InvalidToken(Exception):
    """A link token that was tampered with, is for another purpose, or is malformed."""


class ExpiredToken(InvalidToken):
    pass


class UsedToken(InvalidToken):
    """A confirmation link from an opt-in round that is over (confirmed or left since)."""


class TransientMailError(Exception):
    """The relay said 4xx or the line dropped: try again later."""


class PermanentMailError(Exception):
    """The relay said 5xx: this message to this recipient will never be accepted."""

    def __init__(self, message: str, code: int | None = None):
        super().__init__(message)
        self.code = code
