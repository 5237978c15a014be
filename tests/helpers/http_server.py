"""A loopback HTTP server that serves a folder with HTTP Range support and records each request."""

from __future__ import annotations

import functools
import os
import re
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


class RangeHandler(SimpleHTTPRequestHandler):
    """SimpleHTTPRequestHandler plus ``Range: bytes=N-`` (206 / 416), as real archive hosts answer."""

    log: list[dict]

    def log_message(self, *args):  # keep test output quiet
        pass

    def do_GET(self):
        self.log.append({"path": self.path, "range": self.headers.get("Range")})
        path = Path(self.translate_path(self.path))
        match = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range") or "")
        if not match or not path.is_file():
            return super().do_GET()
        start, size = int(match.group(1)), path.stat().st_size
        if start >= size:
            self.send_response(416)
            self.send_header("Content-Range", f"bytes */{size}")
            self.end_headers()
            return None
        self.send_response(206)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Range", f"bytes {start}-{size - 1}/{size}")
        self.send_header("Content-Length", str(size - start))
        self.end_headers()
        with open(path, "rb") as handle:
            handle.seek(start)
            self.wfile.write(handle.read())
        return None


class FolderServer:
    """``with FolderServer(folder) as server:`` serves ``folder`` at ``server.url``."""

    def __init__(self, folder: str | os.PathLike):
        self.log: list[dict] = []
        handler = type("Handler", (RangeHandler,), {"log": self.log})
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(handler, directory=str(folder)))
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> FolderServer:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
