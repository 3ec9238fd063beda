"""A loopback HTTP server for tests and benchmarks of remote archives: serves in-memory files on
127.0.0.1 (a free port), honours single `Range: bytes=a-b` requests (206 Partial Content), answers
HEAD with the length, and counts what it sends.

    with RangeServer({"/x.cart": data}) as srv:
        cartridge.open(srv.url("/x.cart"))
        srv.bytes_sent, srv.requests, srv.ranges

`honour_range=False` answers every GET with the whole file (200), as a server that ignores
ranges does. The server runs in a daemon thread, stops at the end of the `with` block, and
every request has a socket timeout, so a test can neither hang on it nor leave it behind.
"""
from __future__ import annotations

import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


class RangeServer:
    def __init__(self, files: dict[str, bytes], *, honour_range: bool = True):
        self.files = dict(files)
        self.honour_range = honour_range
        self.bytes_sent = 0
        self.requests = 0
        self.ranges: list[tuple[str, int, int]] = []   # (path, first byte, last byte) of each GET
        self._lock = threading.Lock()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    @property
    def port(self) -> int:
        assert self._httpd is not None, "the server is not running"
        return int(self._httpd.server_address[1])

    def reset(self) -> None:
        with self._lock:
            self.bytes_sent = 0
            self.requests = 0
            self.ranges = []

    def _count(self, path: str, first: int, last: int, n: int) -> None:
        with self._lock:
            self.requests += 1
            self.bytes_sent += n
            self.ranges.append((path, first, last))

    def __enter__(self) -> RangeServer:
        server = self

        class Handler(BaseHTTPRequestHandler):
            timeout = 10                      # a stuck client cannot hold a thread forever
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:   # quiet
                pass

            def _file(self) -> bytes | None:
                data = server.files.get(self.path.split("?", 1)[0])
                if data is None:
                    self.send_response(404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                return data

            def do_HEAD(self) -> None:
                data = self._file()
                if data is None:
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(data)))
                self.send_header("Accept-Ranges", "bytes" if server.honour_range else "none")
                self.end_headers()

            def do_GET(self) -> None:
                data = self._file()
                if data is None:
                    return
                size = len(data)
                m = _RANGE.match(self.headers.get("Range", "") or "")
                if m and server.honour_range and (m.group(1) or m.group(2)):
                    if m.group(1):
                        first = int(m.group(1))
                        last = min(int(m.group(2)), size - 1) if m.group(2) else size - 1
                    else:                          # a suffix: the last N bytes
                        first, last = max(0, size - int(m.group(2))), size - 1
                    if first >= size or first > last:
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{size}")
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                    body = data[first:last + 1]
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {first}-{last}/{size}")
                else:
                    first, last, body = 0, size - 1, data
                    self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Content-Type", "application/octet-stream")
                self.end_headers()
                self.wfile.write(body)
                server._count(self.path, first, last, len(body))

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever,
                                        kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._httpd = None
