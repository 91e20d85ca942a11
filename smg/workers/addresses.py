"""The worker-address guard: worker URLs that point at link-local addresses or cloud
metadata services are refused, unless the operator admits them
(``--worker-allowed-addresses``).

Why: a worker URL is an address the gateway itself fetches from. Registration reads
``GET /v1/models`` there and shows what it got (``/v1/models``, ``/workers``), probes
and load polls follow, and proxied requests carry the worker's key. Whoever may call
the Workers API (or write the discovery manifest) could otherwise point the gateway at
the host's metadata service and read instance credentials through it (server-side
request forgery). An inference server never lives on such an address.

Rules:
- Refused: the link-local ranges 169.254.0.0/16 (RFC 3927) and fe80::/10 (RFC 4291),
  where the clouds serve instance metadata and credentials (169.254.169.254 on AWS,
  GCP, Azure, Oracle, DigitalOcean, OpenStack; 169.254.170.2 ECS task credentials;
  169.254.0.23 Tencent); the metadata endpoints outside them: fd00:ec2::254 (AWS IMDS
  over IPv6), 100.100.100.200 (Alibaba Cloud), 168.63.129.16 (Azure's WireServer);
  and the metadata host names ``metadata.google.internal``, ``metadata.goog``,
  ``metadata`` (GCP), ``instance-data``, ``instance-data.ec2.internal`` (AWS), refused
  as written, resolvable or not. Loopback, private (RFC 1918, ULA fc00::/7) and
  shared (100.64.0.0/10) addresses stay allowed: workers live there. The list is
  single addresses outside link-local on purpose: 100.64.0.0/10 and fc00::/7 are
  ordinary cluster networks.
- An address is judged in every spelling a resolver accepts for it: IPv6 forms that
  carry an IPv4 address (IPv4-mapped ``::ffff:a.b.c.d``, IPv4-compatible, NAT64
  ``64:ff9b::/96``, 6to4 ``2002::/16``) by that address, and IPv4 in the legacy forms
  (``2852039166``, ``0xa9fea9fe``, ``0251.0376.0251.0376``, ``169.254.43518``) by the
  address they mean (``socket.inet_aton``, as getaddrinfo reads them).
- A host name is resolved once, bounded (``worker_probe_timeout_secs``), and every
  address it resolves to is judged. A name that does not resolve in time is not
  refused here: registration fails later anyway. The address is not pinned: a name
  re-pointed after registration (DNS rebinding) is not caught; register names you
  control.
- The allow-list holds IP addresses, CIDR networks and host names: an address inside a
  listed network is admitted, and so is a listed name with whatever it resolves to.
- Sans-I/O core: ``refusal(url)`` is pure; ``check(url)`` awaits the resolver it was
  given (the running loop's ``getaddrinfo`` by default).
- A worker URL that reaches one of the gateway's own listeners (``listeners``: the
  bound ``(host, port)`` pairs) is refused: proxying to itself would recurse until the
  process runs out of file descriptors. It reaches a listener when the port is the same
  and the address is the listener's, or, for a listener on a wildcard address
  (``0.0.0.0``, ``::``), any address of this host (one a socket can bind to), including
  the unspecified address and ``localhost``.
"""
from __future__ import annotations

import asyncio
import ipaddress
import socket
from urllib.parse import urlsplit

from smg.errors import ConfigError

_LINK_LOCAL = "a link-local address (where cloud instance-metadata services answer)"
BLOCKED_NETWORKS: tuple = (
    (ipaddress.ip_network("169.254.0.0/16"), _LINK_LOCAL),
    (ipaddress.ip_network("fe80::/10"), _LINK_LOCAL),
    (ipaddress.ip_network("fd00:ec2::254/128"), "the AWS instance-metadata service (IPv6)"),
    (ipaddress.ip_network("100.100.100.200/32"), "the Alibaba Cloud metadata service"),
    (ipaddress.ip_network("168.63.129.16/32"), "the Azure WireServer (platform agent endpoint)"),
)
METADATA_NAMES = frozenset({
    "metadata.google.internal", "metadata.goog", "metadata",  # GCP
    "instance-data", "instance-data.ec2.internal",             # AWS
})
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_LEGACY_V4 = frozenset("0123456789abcdefx.")
_FLAG = "--worker-allowed-addresses"


def literal(host: str):
    """The IP address ``host`` spells (any form a resolver reads as a number), or None
    for a host name."""
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        pass
    if host and host[0].isdigit() and set(host) <= _LEGACY_V4:
        try:
            return ipaddress.IPv4Address(socket.inet_aton(host))
        except OSError:
            return None
    return None


def _carried_v4(ip):
    """The IPv4 address an IPv6 address carries, or None."""
    v4 = ip.ipv4_mapped or ip.sixtofour
    if v4 is not None:
        return v4
    n = int(ip)
    if ip in _NAT64 or (n >> 32 == 0 and n > 0xFFFF):  # NAT64, or IPv4-compatible (::a.b.c.d)
        return ipaddress.IPv4Address(n & 0xFFFFFFFF)
    return None


def judge(ip) -> str | None:
    """What ``ip`` is when it is refused (a phrase for the error message), else None."""
    if ip.version == 6:
        v4 = _carried_v4(ip)
        if v4 is not None:
            ip = v4
    for net, what in BLOCKED_NETWORKS:
        if ip.version == net.version and ip in net:
            return what
    return None


def _split(url: str):
    try:
        parts = urlsplit(url)
        return parts.hostname, parts.port
    except ValueError:
        return None, None


async def _getaddrinfo(host: str, port) -> list:
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [info[4][0] for info in infos]


_LOOPBACK_NAMES = {"localhost": ("127.0.0.1", "::1"), "localhost.localdomain": ("127.0.0.1", "::1")}


def is_local(ip) -> bool:
    """True when ``ip`` is an address of this host: loopback, unspecified, or one a
    socket can bind to (an interface's)."""
    if ip.is_loopback or ip.is_unspecified:
        return True
    try:
        with socket.socket(socket.AF_INET6 if ip.version == 6 else socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind((str(ip), 0))
        return True
    except OSError:
        return False


def reaches(ip, port: int, listeners) -> tuple | None:
    """The listener ``(host, port)`` a connection to ``ip``:``port`` would reach, or None."""
    if ip.version == 6 and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    for host, lport in listeners:
        if lport != port:
            continue
        try:
            lip = ipaddress.ip_address(host) if host else ipaddress.ip_address("0.0.0.0")
        except ValueError:
            lips = _LOOPBACK_NAMES.get(host.lower())
            if lips and (str(ip) in lips or ip.is_unspecified):
                return host, lport
            continue
        if lip.is_unspecified:
            if (lip.version == 6 or ip.version == 4) and is_local(ip):
                return host, lport
        elif ip == lip or (ip.is_unspecified and ip.version == lip.version):
            return host, lport
    return None


class AddressGuard:
    """Judges worker URLs; ``allowed`` is the operator's allow-list; ``listeners`` the
    gateway's own bound ``(host, port)`` pairs (filled by the gateway)."""

    __slots__ = ("networks", "names", "timeout", "_resolve", "listeners")

    def __init__(self, allowed=(), timeout: float = 5.0, resolve=None) -> None:
        """``resolve(host, port)``: awaitable list of address strings (tests inject one).

        Raises:
            ValueError: an allow-list entry is neither an address, a network nor a host name.
        """
        nets, names = [], set()
        for entry in allowed:
            e = entry.strip()
            try:
                nets.append(ipaddress.ip_network(e, strict=False))
                continue
            except ValueError:
                pass
            name = e.rstrip(".").lower()
            if not name or "/" in name or ":" in name or any(c.isspace() for c in name) or not name.isascii():
                raise ValueError(f"{entry!r} is not an IP address, a CIDR network or a host name")
            names.add(name)
        self.networks = tuple(nets)
        self.names = frozenset(names)
        self.timeout = timeout
        self._resolve = resolve or _getaddrinfo
        self.listeners: list = []

    @classmethod
    def from_config(cls, cfg) -> "AddressGuard":
        """Raises ConfigError naming ``--worker-allowed-addresses``."""
        try:
            return cls(cfg.worker_allowed_addresses, cfg.worker_probe_timeout_secs)
        except ValueError as e:
            raise ConfigError(_FLAG, str(e)) from None

    def _admits(self, ip) -> bool:
        if not self.networks:
            return False
        forms = [ip]
        if ip.version == 6:
            v4 = _carried_v4(ip)
            if v4 is not None:
                forms.append(v4)
        return any(f.version == n.version and f in n for f in forms for n in self.networks)

    @staticmethod
    def _message(url: str, host: str, what: str, via: str = "") -> str:
        return (f"url: {url!r} is refused: {host}{via} is {what}; "
                f"list it in {_FLAG} to register it anyway")

    def _loop_message(self, url: str, ip, port, via: str = "") -> str | None:
        if not self.listeners or port is None:
            return None
        hit = reaches(ip, port, self.listeners)
        if hit is None:
            return None
        return (f"url: {url!r} is refused: it{via} is this gateway's own listener "
                f"({hit[0] or '0.0.0.0'}:{hit[1]}); a worker must be an inference server, not the gateway")

    def refusal(self, url: str) -> str | None:
        """The refusal message for ``url`` judged as written (no lookup), or None.

        A host name outside the metadata names is not judged here (``needs_lookup``)."""
        host, port = _split(url)
        if not host:
            return None  # not a URL with a host: spec validation answers that
        if port is None:
            port = 443 if url.lower().startswith("https") else 80
        name = host.rstrip(".")
        for a in _LOOPBACK_NAMES.get(name.lower(), ()):
            loop = self._loop_message(url, ipaddress.ip_address(a), port)
            if loop is not None:
                return loop
        ip = literal(name)
        if ip is not None:
            loop = self._loop_message(url, ip, port)
            if loop is not None:
                return loop
        if name in self.names:
            return None
        ip = literal(name)
        if ip is not None:
            what = judge(ip)
            return self._message(url, host, what) if what is not None and not self._admits(ip) else None
        if name in METADATA_NAMES:
            return self._message(url, host, "a cloud instance-metadata service name")
        return None

    def needs_lookup(self, url: str) -> bool:
        """True when ``url``'s host is a name only a lookup can judge."""
        host, _ = _split(url)
        if not host:
            return False
        name = host.rstrip(".")
        return name not in self.names and name not in METADATA_NAMES and literal(name) is None

    async def check(self, url: str) -> str | None:
        """``refusal(url)``, then, for a host name, the bounded lookup: the message when
        any address it resolves to is refused, else None (also when it does not resolve)."""
        reason = self.refusal(url)
        if reason is not None or not self.needs_lookup(url):
            return reason
        host, port = _split(url)
        try:
            addrs = await asyncio.wait_for(self._resolve(host.rstrip("."), port), self.timeout)
        except (OSError, UnicodeError, ValueError, asyncio.TimeoutError):
            return None
        for a in addrs:
            try:
                ip = ipaddress.ip_address(a)
            except ValueError:
                continue
            loop = self._loop_message(url, ip, port or (443 if url.lower().startswith("https") else 80),
                                      f" (resolved to {a})")
            if loop is not None:
                return loop
            what = judge(ip)
            if what is not None and not self._admits(ip):
                return self._message(url, host, what, f" (resolved to {a})")
        return None
