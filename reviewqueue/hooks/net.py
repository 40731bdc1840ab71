"""SSRF guard for webhook targets: resolve the host, refuse private, loopback, link-local (and
other non-public) addresses unless WEBHOOKS_ALLOW_PRIVATE_NETWORKS, and connect to the address
that was checked (no second DNS lookup for a rebinding attack to race)."""

from __future__ import annotations

import ipaddress
import socket
from typing import Any
from urllib.parse import urlsplit

import httpcore
from django.conf import settings


class UnsafeTarget(ValueError):
    """The URL or the address it resolves to may not be called."""


def address_problem(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str | None:
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if ip.is_loopback:
        return "a loopback address"
    if ip.is_link_local:
        return "a link-local address"
    if ip.is_private:
        return "a private address"
    if ip.is_multicast or ip.is_reserved or ip.is_unspecified or not ip.is_global:
        return "not a public address"
    return None


def resolve(host: str, port: int) -> list[str]:
    """The addresses `host` resolves to, each checked; UnsafeTarget when any is refused."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise UnsafeTarget(f"cannot resolve host {host!r}: {exc.strerror}") from None
    addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
    if not settings.WEBHOOKS_ALLOW_PRIVATE_NETWORKS:
        for address in addresses:
            problem = address_problem(ipaddress.ip_address(address.split("%")[0]))
            if problem:
                raise UnsafeTarget(
                    f"{host} resolves to {address}, {problem}; webhooks may only call public addresses "
                    "(set WEBHOOKS_ALLOW_PRIVATE_NETWORKS=1 to allow private networks)"
                )
    if not addresses:
        raise UnsafeTarget(f"cannot resolve host {host!r}")
    return addresses


def check_url(url: str) -> str:
    """The URL, if a webhook may call it; UnsafeTarget naming the problem otherwise."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise UnsafeTarget("must be an http:// or https:// URL")
    if not parts.hostname:
        raise UnsafeTarget("must name a host")
    if parts.username or parts.password:
        raise UnsafeTarget("must not contain credentials")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise UnsafeTarget("has an invalid port") from None
    resolve(parts.hostname, port)
    return url


class GuardedBackend(httpcore.SyncBackend):
    """httpcore's network backend, connecting only to addresses `resolve` accepts. TLS still
    verifies the certificate for the URL's host name (httpcore sends the origin as SNI)."""

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Any = None,
    ) -> httpcore.NetworkStream:
        try:
            addresses = resolve(host, port)
        except UnsafeTarget as exc:
            raise httpcore.ConnectError(str(exc)) from None
        return super().connect_tcp(addresses[0], port, timeout, local_address, socket_options)
