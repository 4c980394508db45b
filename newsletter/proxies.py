"""Which client address and scheme to believe: X-Forwarded-* only when our own proxies sent them.

`PROXY_FIX_X_FOR` says how many proxies stand in front of the app; `TRUSTED_PROXIES` says where
they are. A request whose direct peer (and, behind a chain, every inner proxy named in
X-Forwarded-For) is not in those networks reached gunicorn some other way: its forwarded headers
are the sender's own words, so they are dropped and the peer's address is the client's.
"""

from __future__ import annotations

import ipaddress
import logging

from werkzeug.middleware.proxy_fix import ProxyFix

log = logging.getLogger(__name__)

FORWARDED_HEADERS = ("HTTP_X_FORWARDED_FOR", "HTTP_X_FORWARDED_PROTO", "HTTP_X_FORWARDED_HOST",
                     "HTTP_X_FORWARDED_PORT", "HTTP_X_FORWARDED_PREFIX", "HTTP_FORWARDED")

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_networks(value: str) -> tuple[Network, ...]:
    """`127.0.0.1/32, 10.0.0.0/8, fd00::/8` (a bare address is one host). ValueError says which part is wrong."""
    networks = []
    for part in (value or "").split(","):
        if part.strip():
            try:
                networks.append(ipaddress.ip_network(part.strip(), strict=False))
            except ValueError:
                raise ValueError(f"TRUSTED_PROXIES: {part.strip()!r} is not an address or network; "
                                 "write CIDRs separated by commas, e.g. 127.0.0.1/32,10.0.0.0/8") from None
    return tuple(networks)


def trust_proxies(wsgi_app, proxies: int, trusted: str):
    """`wsgi_app` behind `proxies` proxies in the `trusted` networks (the settings PROXY_FIX_X_FOR, TRUSTED_PROXIES)."""
    networks = parse_networks(trusted)
    if not proxies:
        if networks:
            log.warning("TRUSTED_PROXIES is set but PROXY_FIX_X_FOR=0: no X-Forwarded-* header is believed.")
        return wsgi_app
    if not networks:
        log.warning("PROXY_FIX_X_FOR=%d but TRUSTED_PROXIES is empty: X-Forwarded-* headers are ignored, and "
                    "every client looks like the proxy's address (one rate limit for all). Set TRUSTED_PROXIES "
                    "to the proxies' networks, e.g. TRUSTED_PROXIES=127.0.0.1/32.", proxies)
        return TrustedProxies(wsgi_app, proxies, ())
    return TrustedProxies(wsgi_app, proxies, networks)


class TrustedProxies:
    """ProxyFix (X-Forwarded-For of `proxies` hops, -Proto, -Host) for requests from trusted proxies only."""

    def __init__(self, app, proxies: int, networks: tuple[Network, ...]):
        self.app = app
        self.proxies = proxies
        self.networks = networks
        self.fixed = ProxyFix(app, x_for=proxies, x_proto=1, x_host=1)

    def __call__(self, environ, start_response):
        if self.from_our_proxies(environ):
            return self.fixed(environ, start_response)
        for header in FORWARDED_HEADERS:
            environ.pop(header, None)
        return self.app(environ, start_response)

    def from_our_proxies(self, environ) -> bool:
        # The peer is the proxy nearest to us; each proxy farther out was written into
        # X-Forwarded-For by the one after it (rightmost first), and must be ours too.
        forwarded_for = [hop.strip() for hop in environ.get("HTTP_X_FORWARDED_FOR", "").split(",")]
        inner_proxies = forwarded_for[::-1][: self.proxies - 1]
        return all(self.trusted(address) for address in [environ.get("REMOTE_ADDR") or "", *inner_proxies])

    def trusted(self, address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False  # a unix socket, a port or garbage: not a proxy we know
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        return any(ip in network for network in self.networks)
