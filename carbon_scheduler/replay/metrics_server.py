"""The HTTP endpoint of `replay --serve-metrics`: GET /metrics in the Prometheus
text format, from a background thread.

Each scrape renders the registry while holding the replay's lock, which the
pacing loop also holds while it processes one simulated event. So a scrape never
returns half of an event, such as one region's intensity of the new step next to
another region's of the old one.
"""

from __future__ import annotations

import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import structlog
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

log = structlog.get_logger(__name__)


class MetricsServer:
    """Serves `registry` on http://`address`:`port`/metrics until `close()`.

    The constructor binds the socket, so a port in use raises OSError at once.
    """

    def __init__(self, registry: CollectorRegistry, lock: threading.Lock, *, address: str, port: int) -> None:
        handler = _handler_class(registry, lock)
        server_class = _IPv6Server if ":" in address else ThreadingHTTPServer
        self._server = server_class((address, port), handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="metrics-http", daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        host = f"[{host}]" if ":" in str(host) else host
        return f"http://{host}:{port}/metrics"

    def start(self) -> None:
        self._thread.start()
        log.info("metrics_server_started", url=self.url)

    def close(self) -> None:
        """Stop serving and release the port."""
        if self._thread.is_alive():
            self._server.shutdown()
            self._thread.join()
        self._server.server_close()
        log.info("metrics_server_stopped", url=self.url)


class _IPv6Server(ThreadingHTTPServer):
    """ThreadingHTTPServer on an IPv6 address such as `::` or `::1`."""

    address_family = socket.AF_INET6


def _handler_class(registry: CollectorRegistry, lock: threading.Lock) -> type[BaseHTTPRequestHandler]:
    class MetricsHandler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - the name http.server dispatches to
            path = self.path.partition("?")[0]
            if path != "/metrics":
                self._reply(404, b"not found; metrics are at /metrics\n", "text/plain; charset=utf-8")
                return
            with lock:
                body = generate_latest(registry)
            self._reply(200, body, CONTENT_TYPE_LATEST)

        def _reply(self, status: int, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the base class's name
            # Prometheus scrapes every few seconds; an access line per scrape would bury the report.
            return None

    return MetricsHandler
