"""The HTTP endpoint: prometheus_client's WSGI server on ``ADDR:PORT``, stopped on request.

``ADDR`` is a literal IPv4 address or a bracketed IPv6 one (``127.0.0.1:9091``,
``[::1]:9091``, ``0.0.0.0:9091`` for every interface); port 0 takes a free port, which
``MetricsServer.url`` then names. Any path answers with the metrics (``/metrics`` is the
usual one). A bad address, a port in use or an address this host does not have is a
``ValidationError`` (exit 2) naming the flag and the reason.
"""

from __future__ import annotations

import ipaddress

from topoipam.errors import ValidationError


def parse_listen(text: str, flag: str = "--listen") -> tuple[str, int]:
    """``"127.0.0.1:9091"`` -> ``("127.0.0.1", 9091)``; ``"[::1]:0"`` -> ``("::1", 0)``."""
    host, sep, port = text.rpartition(":")
    if not sep or not host:
        raise ValidationError(f"{flag} {text!r}: expected ADDR:PORT, e.g. 127.0.0.1:9091 or [::1]:9091")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        wanted = 6
    else:
        wanted = 4
    try:
        addr = ipaddress.ip_address(host)
    except ValueError:
        raise ValidationError(f"{flag} {text!r}: {host!r} is not an IP address (IPv6 goes in brackets: "
                              "[::1]:9091)") from None
    if addr.version != wanted:
        raise ValidationError(f"{flag} {text!r}: write an IPv6 address in brackets, e.g. [{host}]:{port}")
    if not port.isdigit() or int(port) > 65535:
        raise ValidationError(f"{flag} {text!r}: port {port!r} is not a number from 0 to 65535")
    return str(addr), int(port)


class MetricsServer:
    def __init__(self, registry, listen: str, flag: str = "--listen") -> None:
        self.registry = registry
        self.listen, self.flag = listen, flag
        self.host, self.port = parse_listen(listen, flag)
        self._httpd = None

    def start(self) -> "MetricsServer":
        from prometheus_client import start_http_server

        try:
            self._httpd, _ = start_http_server(self.port, self.host, registry=self.registry)
        except OSError as exc:
            raise ValidationError(f"{self.flag} {self.listen}: cannot listen there: "
                                  f"{exc.strerror or exc}") from None
        self.port = self._httpd.server_address[1]
        return self

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/metrics"

    def stop(self) -> None:
        """Stop serving (a scrape being answered finishes first) and close the socket."""
        if self._httpd is not None:
            httpd, self._httpd = self._httpd, None
            httpd.shutdown()
            httpd.server_close()
