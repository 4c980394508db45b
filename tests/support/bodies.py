"""Request bodies of any size, made as they are read, that count how much of them was read."""

from __future__ import annotations

import io


class GeneratedBody(io.RawIOBase):
    """`head`, then `filler` repeated up to `size` bytes in all, then `tail`; never held in memory."""

    def __init__(self, size: int, head: bytes = b"", filler: bytes = b" ", tail: bytes = b""):
        self.size = size
        self.head, self.filler, self.tail = head, filler, tail
        self.consumed = 0

    def readable(self) -> bool:
        return True

    # Seekable, as Werkzeug's test client wants its input to be; the position is what was read.
    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.consumed

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        self.consumed = {io.SEEK_SET: 0, io.SEEK_CUR: self.consumed, io.SEEK_END: self.size}[whence] + offset
        return self.consumed

    def _segment(self, start: int, end: int) -> bytes:
        middle_start, middle_end = len(self.head), self.size - len(self.tail)
        part = self.head[start:end]
        if end > middle_start and start < middle_end:
            first, last = max(start, middle_start) - middle_start, min(end, middle_end) - middle_start
            repeated = self.filler * ((last - first) // len(self.filler) + 2)
            part += repeated[first % len(self.filler):][:last - first]
        if end > middle_end:
            part += self.tail[max(start, middle_end) - middle_end:end - middle_end]
        return part

    def readinto(self, buffer) -> int:
        count = min(len(buffer), self.size - self.consumed)
        if count <= 0:
            return 0
        buffer[:count] = self._segment(self.consumed, self.consumed + count)
        self.consumed += count
        return count


def chunked(client, path: str, body: GeneratedBody, content_type: str, **kwargs):
    """A POST as gunicorn hands a chunked request to the app: no length, the stream ends itself."""
    headers = {"Transfer-Encoding": "chunked", **kwargs.pop("headers", {})}
    return client.post(path, input_stream=body, content_type=content_type, headers=headers,
                       environ_overrides={"wsgi.input_terminated": True, "CONTENT_LENGTH": None}, **kwargs)
