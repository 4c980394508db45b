"""Which addresses a feed may reach: the table the SSRF defence of issue 12 stands on."""

from __future__ import annotations

import ipaddress

import pytest

from newsletter.infra.outbound_http import refusal

# address: (refusal by default, refusal with FEED_ALLOW_PRIVATE=1)
TABLE = {
    "93.184.215.14": (None, None),
    "2606:4700::1111": (None, None),
    "::ffff:93.184.215.14": (None, None),  # IPv4-mapped: judged as the IPv4 host
    "64:ff9b::5db8:d70e": (None, None),  # NAT64 of 93.184.215.14
    "127.0.0.1": ("loopback", None),
    "127.255.0.9": ("loopback", None),
    "::1": ("loopback", None),
    "::ffff:127.0.0.1": ("loopback", None),
    "64:ff9b::7f00:1": ("loopback", None),
    "2002:7f00:1::1": ("loopback", None),  # 6to4 around 127.0.0.1
    "10.0.0.1": ("private", None),
    "172.16.5.4": ("private", None),
    "192.168.1.1": ("private", None),
    "100.64.0.1": ("private", None),  # carrier-grade NAT
    "198.18.0.1": ("private", None),  # benchmarking
    "192.0.2.1": ("private", None),  # documentation
    "fd12:3456::1": ("private", None),  # unique local
    "fec0::1": ("private", None),  # site-local, deprecated but still routed here and there
    "::ffff:10.0.0.1": ("private", None),
    "169.254.169.254": ("link-local", "link-local"),  # the cloud's metadata service
    "::ffff:169.254.169.254": ("link-local", "link-local"),
    "fe80::1": ("link-local", "link-local"),
    "224.0.0.1": ("multicast", "multicast"),
    "239.255.255.250": ("multicast", "multicast"),
    "ff02::1": ("multicast", "multicast"),
    "240.0.0.1": ("reserved", "reserved"),
    "255.255.255.255": ("reserved", "reserved"),
    "::127.0.0.1": ("reserved", "reserved"),  # IPv4-compatible, long deprecated
    "0.0.0.0": ("unspecified", "unspecified"),
    "0.1.2.3": ("unspecified", "unspecified"),  # "this network"
    "::": ("unspecified", "unspecified"),
    "::ffff:0.0.0.0": ("unspecified", "unspecified"),
}


@pytest.mark.parametrize(("address", "expected"), TABLE.items())
def test_what_a_feed_may_reach(address, expected):
    ip = ipaddress.ip_address(address)
    assert (refusal(ip, allow_private=False), refusal(ip, allow_private=True)) == expected
