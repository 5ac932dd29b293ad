"""The operator's endpoints: /metrics (Prometheus text format), /healthz and /readyz.

A WSGI app on the standard library's server, on a daemon thread: the scrape path never
touches the event loop that carries tasks, and prometheus_client renders the exposition
(its own HTTP server would answer every path with metrics, and we need two more).
"""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Callable, Iterable
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import make_wsgi_app

from flow_bridge.core import metrics, url_host

logger = logging.getLogger("flow_bridge.ops")

StartResponse = Callable[..., Any]


class _ThreadingServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True  # a slow scraper never holds up the bridge's exit


def _server_class(host: str, port: int) -> type[_ThreadingServer]:
    """The server class for `host`'s address family: an IPv6 address such as :: or ::1
    needs AF_INET6, which the standard library's server does not pick by itself."""
    infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    if infos[0][0] != socket.AF_INET6:
        return _ThreadingServer

    class _Server6(_ThreadingServer):
        address_family = socket.AF_INET6

    return _Server6


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        logger.debug("%s %s", self.address_string(), format % args)


def _text(start_response: StartResponse, status: str, body: str) -> Iterable[bytes]:
    data = (body + "\n").encode("utf-8")
    start_response(status, [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(data)))])
    return [data]


def _allow(start_response: StartResponse, method: str) -> Iterable[bytes]:
    data = f"method {method} not allowed: use GET or HEAD\n".encode()
    start_response("405 Method Not Allowed", [("Allow", "GET, HEAD"), ("Content-Type", "text/plain; charset=utf-8"),
                                              ("Content-Length", str(len(data)))])
    return [data]


def make_app() -> Callable[[dict[str, Any], StartResponse], Iterable[bytes]]:
    exposition = make_wsgi_app(metrics.REGISTRY)

    def app(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        method = environ.get("REQUEST_METHOD", "GET")
        if method not in ("GET", "HEAD"):
            return _allow(start_response, method)
        if method == "HEAD":
            # The same status and headers as GET, and no body (RFC 9110 9.3.2): load
            # balancers and `curl -I` probe this way; prometheus_client answers HEAD with 405.
            for _ in app({**environ, "REQUEST_METHOD": "GET"}, start_response):
                pass
            return []
        path = environ.get("PATH_INFO", "")
        if path == "/metrics":
            result: Iterable[bytes] = exposition(environ, start_response)
            return result
        if path == "/healthz":
            return _text(start_response, "200 OK", "ok")
        if path == "/readyz":
            ready, reasons = metrics.readiness()
            if ready:
                return _text(start_response, "200 OK", "ready")
            return _text(start_response, "503 Service Unavailable", "not ready: " + "; ".join(reasons))
        return _text(start_response, "404 Not Found", "not found: try /metrics, /healthz or /readyz")

    return app


class OpsServer:
    """Serves the endpoints until close(); binding errors surface from the constructor."""

    def __init__(self, host: str, port: int) -> None:
        self._server = make_server(host, port, make_app(), server_class=_server_class(host, port),
                                   handler_class=_QuietHandler)
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(target=self._server.serve_forever, name="flow-bridge-ops", daemon=True)

    def start(self) -> None:
        self._thread.start()
        logger.info("metrics and health on http://%s:%d (/metrics, /healthz, /readyz)",
                    url_host(str(self._server.server_address[0])), self.port)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
