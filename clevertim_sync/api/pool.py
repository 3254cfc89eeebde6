"""One HTTP connection pool for every account of a daemon.

Owns: the transports the daemon's API clients share. Each `ClevertimClient` keeps its own
`httpx.Client` (its token, timeout, cookies and base URL stay its own), but they all send through
one `httpx.HTTPTransport` per trust store: one TLS context (certifi's CAs loaded once, ~0.9 MB
each, instead of once per account) and one pool of kept-alive connections to the API's host,
bounded by `keepalive`. httpx's limits are per pool; every account talks to the same host
(www.clevertim.com), so the pool's limit is the per-host limit. The number of requests in flight
is bounded above it, by the daemon's job slots.
"""

from __future__ import annotations

import threading

import httpx

from clevertim_sync.api.client import _trust


class _Borrowed(httpx.BaseTransport):
    """The shared transport as one client sees it: closing the client leaves the pool open."""

    def __init__(self, shared: httpx.HTTPTransport) -> None:
        self._shared = shared

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        return self._shared.handle_request(request)

    def close(self) -> None:
        pass  # the pool outlives any one account's client; SharedPool.close ends it


class SharedPool:
    def __init__(self, keepalive: int) -> None:
        self._limits = httpx.Limits(max_connections=None, max_keepalive_connections=keepalive)
        self._transports: dict[str | None, httpx.HTTPTransport] = {}
        self._lock = threading.Lock()

    def transport(self, ca_bundle: str | None) -> httpx.BaseTransport:
        """A transport for a client trusting `ca_bundle` (None: the default trust store)."""
        with self._lock:
            shared = self._transports.get(ca_bundle)
            if shared is None:
                # trust_env: SSL_CERT_FILE is honoured, as by a client's own transport.
                shared = httpx.HTTPTransport(verify=_trust(ca_bundle), limits=self._limits, trust_env=True)
                self._transports[ca_bundle] = shared
        return _Borrowed(shared)

    def close(self) -> None:
        with self._lock:
            for shared in self._transports.values():
                shared.close()
            self._transports.clear()
