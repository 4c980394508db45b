"""GET from the open internet (what feeds need), without becoming a way into the network we run in.

- Every hop's host is resolved once, every address it resolves to is vetted (loopback, private,
  link-local, multicast, reserved and unspecified refused; IPv4 inside IPv6 judged as IPv4), and
  the connection goes to the vetted address itself, with the original Host header and TLS server
  name: no second lookup for a rebinding DNS server to answer differently. Redirects are followed
  by hand, each target vetted the same way.
- One deadline bounds the whole fetch: DNS, connect, TLS, the request, every header and body read,
  every redirect. Each socket wait is given only what is left of it.
- Whatever keeps an HTTP answer from arriving (policy, DNS, connect, TLS, timeout, a reply that is
  not HTTP) is one error type, Unreachable, whose text is for the server log only: callers show
  one neutral sentence, so fetch results cannot map which hosts and ports exist.
"""

from __future__ import annotations

import http
import http.client
import io
import ipaddress
import socket
import ssl
import threading
import time
from dataclasses import dataclass
from email.message import Message
from collections.abc import Callable
from urllib.parse import quote, urljoin, urlsplit

Resolver = Callable[..., list]  # socket.getaddrinfo's signature and answer

REDIRECTS = (301, 302, 303, 307, 308)
MAX_REDIRECTS = 10  # as urllib
CHUNK = 64 * 1024
_THIS_NETWORK = ipaddress.ip_network("0.0.0.0/8")  # "this host" on Linux: 0.0.0.0 reaches loopback
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_URL_SAFE = "/%:@!$&'()*+,;=-._~?"  # left alone when quoting non-ASCII out of a path or query


class Unreachable(Exception):
    """No HTTP answer: refused by policy, unknown host, no connection, TLS failed, timed out, or the
    peer did not speak HTTP. The text says which, for the log; never show it to a user."""


class HttpStatusError(Exception):
    """The server answered with a status that is neither success, redirect nor 304."""

    def __init__(self, code: int):
        super().__init__(code)
        self.code = code
        self.phrase = _phrase(code)


class TooLarge(Exception):
    """The body is larger than the caller accepts."""


@dataclass(frozen=True)
class Response:
    url: str  # after redirects
    status: int
    headers: Message
    body: bytes | None  # None: 304 Not Modified


def get(url: str, headers: dict[str, str], *, timeout: float, max_bytes: int, allow_private: bool = False,
        resolve: Resolver = socket.getaddrinfo) -> Response:
    """GET url, following redirects, within `timeout` seconds in all. `allow_private` lets loopback and
    private addresses through (intranet feeds); link-local, multicast, reserved and unspecified never are."""
    deadline = time.monotonic() + timeout
    try:
        for _ in range(MAX_REDIRECTS + 1):
            target = _Target.parse(url)
            addresses = _vetted_addresses(target, allow_private, resolve, deadline)
            sock = _connect(addresses, deadline)
            try:
                if target.tls:
                    sock = _tls(sock, target.host, deadline)
                response = _send(target, _DeadlineSocket(sock, deadline), headers)
                location = response.getheader("Location")
                if response.status in REDIRECTS and location:
                    url = urljoin(url, location.strip())
                    continue
                if response.status == 304:
                    return Response(url, 304, response.headers, None)
                if not 200 <= response.status < 300:
                    raise HttpStatusError(response.status)
                return Response(url, response.status, response.headers, _body(response, max_bytes))
            finally:
                sock.close()
        raise Unreachable(f"more than {MAX_REDIRECTS} redirects, the last to {url[:200]}")
    except TimeoutError:
        raise Unreachable(f"timed out after {timeout:g} s (at {url[:200]})") from None
    except (OSError, ValueError, http.client.HTTPException) as error:  # ValueError: what http.client refuses to send
        raise Unreachable(f"{error.__class__.__name__}: {error} (at {url[:200]})") from None


def refusal(address: ipaddress.IPv4Address | ipaddress.IPv6Address, allow_private: bool) -> str | None:
    """Why we never connect to this address (a few words), or None when we may."""
    for ip in _judged_as(address):
        if ip.is_unspecified or ip in _THIS_NETWORK:
            return "unspecified"
        if ip.is_multicast:
            return "multicast"
        if ip.is_link_local:
            return "link-local"  # 169.254.169.254 is the cloud's metadata service
        if ip.is_loopback or getattr(ip, "is_site_local", False) or (not ip.is_reserved and not ip.is_global):
            if not allow_private:
                return "loopback" if ip.is_loopback else "private"
            continue
        if ip.is_reserved:
            return "reserved"
    return None


def _judged_as(address) -> list:
    # IPv4 carried inside IPv6 reaches that IPv4 host: judge it as what it reaches.
    if address.version == 4:
        return [address]
    if address.ipv4_mapped:
        return [address.ipv4_mapped]
    if address in _NAT64:
        return [ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)]
    embedded = address.sixtofour or (address.teredo[1] if address.teredo else None)
    return [address, embedded] if embedded else [address]


@dataclass(frozen=True)
class _Target:
    host: str
    port: int
    tls: bool
    path: str  # what goes on the request line

    @classmethod
    def parse(cls, url: str) -> _Target:
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError:
            raise Unreachable(f"not a valid URL: {url[:200]!r}") from None
        scheme = parts.scheme.lower()
        if scheme not in ("http", "https") or not parts.hostname:
            raise Unreachable(f"not an absolute http(s) URL: {url[:200]!r}")
        if parts.username is not None or parts.password is not None:
            raise Unreachable(f"a user name or password in the URL: {url[:200]!r}")
        # Quoted: a redirect's Location may carry spaces or non-ASCII, which a request line cannot.
        path = quote(parts.path or "/", safe=_URL_SAFE) + (f"?{quote(parts.query, safe=_URL_SAFE)}"
                                                           if parts.query else "")
        tls = scheme == "https"
        return cls(host=parts.hostname, port=port or (443 if tls else 80), tls=tls, path=path)


def _vetted_addresses(target: _Target, allow_private: bool, resolve: Resolver, deadline: float) -> list:
    try:
        literal = ipaddress.ip_address(target.host)
    except ValueError:
        literal = None
    if literal is not None:
        family = socket.AF_INET if literal.version == 4 else socket.AF_INET6
        infos = [(family, socket.SOCK_STREAM, 0, "", (target.host, target.port))]
    else:
        infos = _resolve_within(resolve, target.host, target.port, deadline)
    addresses = []
    for family, _type, _proto, _name, sockaddr in infos:
        if family not in (socket.AF_INET, socket.AF_INET6):
            continue
        why = refusal(ipaddress.ip_address(sockaddr[0]), allow_private)
        if why:
            # One refused address refuses the name: a mixed answer is a sign of something off.
            raise Unreachable(f"{target.host} is {sockaddr[0]}, a {why} address: refused by policy")
        if (family, sockaddr) not in addresses:
            addresses.append((family, sockaddr))
    if not addresses:
        raise Unreachable(f"{target.host} has no IPv4 or IPv6 address")
    return addresses


def _resolve_within(resolve: Resolver, host: str, port: int, deadline: float) -> list:
    # getaddrinfo cannot be given a timeout: it runs on a thread we stop waiting for at the deadline.
    outcome: dict = {}
    done = threading.Event()

    def lookup():
        try:
            outcome["infos"] = resolve(host, port, 0, socket.SOCK_STREAM)
        except BaseException as error:  # handed to the waiting thread, which decides
            outcome["error"] = error
        finally:
            done.set()

    threading.Thread(target=lookup, name="resolve-feed-host", daemon=True).start()
    if not done.wait(max(0.0, deadline - time.monotonic())):
        raise TimeoutError(f"resolving {host}")
    error = outcome.get("error")
    if isinstance(error, (OSError, UnicodeError)):
        raise Unreachable(f"cannot resolve {host}: {error}")
    if error is not None:
        raise error
    return outcome["infos"]


def _connect(addresses: list, deadline: float) -> socket.socket:
    last_error: OSError | None = None
    for family, sockaddr in addresses:
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.settimeout(_remaining(deadline))
            sock.connect(sockaddr)
            return sock
        except OSError as error:
            sock.close()
            if isinstance(error, TimeoutError):
                raise
            last_error = error
    raise last_error


def _tls(sock: socket.socket, host: str, deadline: float) -> ssl.SSLSocket:
    # SNI and the certificate check use the name in the URL, not the address we connected to.
    context = ssl.create_default_context()  # per fetch: follows SSL_CERT_FILE and the system store
    sock.settimeout(_remaining(deadline))  # the handshake is bounded by it as a whole
    try:
        return context.wrap_socket(sock, server_hostname=host)
    except BaseException:
        sock.close()
        raise


def _send(target: _Target, sock: _DeadlineSocket, headers: dict[str, str]) -> http.client.HTTPResponse:
    connection = _PinnedConnection(target, sock)
    connection.request("GET", target.path, headers={**headers, "Connection": "close"})
    return connection.getresponse()


def _body(response: http.client.HTTPResponse, max_bytes: int) -> bytes:
    declared = response.getheader("Content-Length", "")
    if declared.isdigit() and int(declared) > max_bytes:
        raise TooLarge(max_bytes)
    chunks, size = [], 0
    while chunk := response.read1(CHUNK):
        size += len(chunk)
        if size > max_bytes:
            raise TooLarge(max_bytes)
        chunks.append(chunk)
    return b"".join(chunks)


def _remaining(deadline: float) -> float:
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise TimeoutError("deadline")
    return remaining


def _phrase(code: int) -> str | None:
    try:
        return http.HTTPStatus(code).phrase  # ours, not the server's free text
    except ValueError:
        return None


class _DeadlineSocket:
    """What http.client reads and writes through: each wait gets only what is left of the deadline,
    so a server trickling a byte at a time cannot stretch the fetch."""

    def __init__(self, sock: socket.socket, deadline: float):
        self._sock = sock
        self._deadline = deadline

    def _arm(self) -> None:
        self._sock.settimeout(_remaining(self._deadline))

    def sendall(self, data) -> None:
        self._arm()
        self._sock.sendall(data)  # its timeout bounds the whole send

    def recv_into(self, buffer) -> int:
        self._arm()
        return self._sock.recv_into(buffer)

    def makefile(self, mode: str = "rb", *args, **kwargs) -> io.BufferedReader:
        return io.BufferedReader(_Reader(self))

    def close(self) -> None:
        pass  # get() closes the real socket once the response is read


class _Reader(io.RawIOBase):
    def __init__(self, sock: _DeadlineSocket):
        self._sock = sock

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        return self._sock.recv_into(buffer)


class _PinnedConnection(http.client.HTTPConnection):
    """http.client's request and response handling over the socket we opened to the vetted address;
    its Host header names the URL's host."""

    def __init__(self, target: _Target, sock: _DeadlineSocket):
        super().__init__(target.host, target.port)
        self.default_port = 443 if target.tls else 80  # Host: leaves out the scheme's own port
        self.sock = sock

    def connect(self):
        raise http.client.NotConnected("a pinned connection never opens another socket")
