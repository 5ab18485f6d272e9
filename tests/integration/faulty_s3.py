"""A small fault-injecting HTTP proxy in front of a real S3 server.

Every request is forwarded to the real server, except that a chosen share of
them fail at the HTTP level: a 503 SlowDown answer, a connection reset before
any answer, or a reset halfway through the response body. ``deny`` answers
everything with 403 AccessDenied (to prove permanent errors are not retried);
``no_checksums`` removes every checksum from the answers, as a store without
checksum support (older MinIO, Ceph) would answer. ``write_delay`` holds every
write (PUT/POST) that long before forwarding it: a slow store.
"""

from __future__ import annotations

import http.client
import re
import socket
import struct
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlparse

SLOWDOWN = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>SlowDown</Code>'
    b"<Message>Please reduce your request rate.</Message></Error>"
)
DENIED = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>AccessDenied</Code>'
    b"<Message>Access Denied</Message></Error>"
)
_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length"}
_CHECKSUM_ELEMENT = re.compile(rb"<Checksum[A-Z0-9]+>[^<]*</Checksum[A-Z0-9]+>")


class FaultyS3:
    def __init__(
        self,
        upstream: str,
        every: int = 3,
        deny: bool = False,
        no_checksums: bool = False,
        write_delay: float = 0.0,
    ):
        self.upstream = urlparse(upstream)
        self.every = every  # 0: no faults
        self.deny = deny
        self.no_checksums = no_checksums
        self.write_delay = write_delay
        self.lock = threading.Lock()
        self.requests = 0
        self.gets: list[str] = []  # paths of the GET requests forwarded
        self.faults = {"slowdown": 0, "reset": 0, "partial": 0}
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def other_url(self) -> str:
        """The same proxy under another name: a 'different endpoint' to bridge."""
        return f"http://localhost:{self.port}"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def _decide(self, method: str) -> str | None:
        with self.lock:
            self.requests += 1
            n = self.requests
            if self.deny:
                return "deny"
            if not self.every or n % self.every:
                return None
            kinds = ["slowdown", "reset", "partial"] if method == "GET" else ["slowdown", "reset"]
            kind = kinds[(n // self.every) % len(kinds)]
            self.faults[kind] += 1
            return kind

    def _handler(proxy):  # noqa: N805 - closes over the proxy
        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _reset(self):
                self.connection.setsockopt(
                    socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
                )
                self.connection.close()
                self.close_connection = True

            def _answer(self, status: int, body: bytes, headers=()):
                self.send_response(status)
                for k, v in headers:
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _proxy(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                fault = proxy._decide(self.command)
                if proxy.write_delay and self.command in ("PUT", "POST"):
                    time.sleep(proxy.write_delay)
                if fault == "deny":
                    return self._answer(403, DENIED, [("Content-Type", "application/xml")])
                if fault == "slowdown":
                    return self._answer(503, SLOWDOWN, [("Content-Type", "application/xml")])
                if fault == "reset":
                    return self._reset()
                conn = http.client.HTTPConnection(
                    proxy.upstream.hostname, proxy.upstream.port, timeout=60
                )
                try:
                    conn.request(self.command, self.path, body=body, headers=dict(self.headers))
                    resp = conn.getresponse()
                    data = resp.read()
                finally:
                    conn.close()
                if self.command == "GET":
                    with proxy.lock:
                        proxy.gets.append(urlparse(self.path).path)
                headers = resp.getheaders()
                if proxy.no_checksums:
                    headers = [
                        (k, v) for k, v in headers if not k.lower().startswith("x-amz-checksum")
                    ]
                    if resp.getheader("Content-Type", "").endswith("xml"):
                        data = _CHECKSUM_ELEMENT.sub(b"", data)
                if self.command == "HEAD":
                    self.send_response(resp.status)
                    for k, v in headers:
                        if k.lower() not in _HOP - {"content-length"}:
                            self.send_header(k, v)
                    self.end_headers()
                    return
                headers = [(k, v) for k, v in headers if k.lower() not in _HOP]
                if fault == "partial" and len(data) > 1:
                    self.send_response(resp.status)
                    for k, v in headers:
                        self.send_header(k, v)
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data[: len(data) // 2])
                    self.wfile.flush()
                    return self._reset()
                if fault == "partial":
                    with proxy.lock:
                        proxy.faults["partial"] -= 1
                self._answer(resp.status, data, headers)

            def finish(self):
                try:
                    super().finish()
                except OSError:
                    pass

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _proxy

        return Handler
