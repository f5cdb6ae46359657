"""``audiotoken-rt live --web PORT``: a page on loopback that shows the newest picture of the stream as it arrives.

Place in the data flow: ``runtime.commands.live`` writes each frame to OUT, then calls ``LivePage.show``; the page
(``/``) listens to ``/events`` (server-sent events: one JSON message per frame, the newest at once on connecting)
and points its ``<img>`` at ``/frames/frame-NNNNNN.png`` with the window's time under it, without reloading.
``/latest`` answers the newest frame's message as JSON (null before the first). Only frame files of OUT are served.

Written on the standard library's ``http.server`` (a ``ThreadingHTTPServer``, one thread per connection): the page
is one static document, one event stream and the frame files, on loopback, for one person watching; a web framework
would add a dependency and a server loop for about a hundred lines. It listens on 127.0.0.1 only, and stops with the
command. Bounded whatever the clients do: at most MAX_CONNECTIONS at once (the next is answered 503 and closed), a
connection that sends no request or reads no answer for CLIENT_SECONDS is dropped, a client gone mid-answer is no
error on stderr, and a request naming another host (a DNS-rebinding page in the user's browser) is refused.
"""

from __future__ import annotations

import contextlib
import json
import re
import socket
import sys
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import cast

from runtime.errors import ConfigError, is_whole, shown

ADDRESS = "127.0.0.1"  # loopback only: the page shows what the microphone hears
FRAME_NAME = re.compile(r"^frame-\d{6,}\.png$")
KEEP_ALIVE_SECONDS = 15  # an event-stream comment this often, so a closed page's connection is noticed
MAX_CONNECTIONS = 16  # open at once: a few tabs of one person (a browser opens at most 6 per host); each is a thread
CLIENT_SECONDS = 10.0  # a connection that sends no request, or takes none of its answer, for this long is dropped
BUSY = b"HTTP/1.0 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"

PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>audiotoken-rt live</title>
<style>
body { background: #111; color: #ddd; font: 16px sans-serif; margin: 2em; text-align: center; }
img { width: min(90vw, 80vh); image-rendering: auto; background: #222; }
</style>
</head>
<body>
<img id="picture" alt="the newest picture">
<p id="when">waiting for the first window</p>
<script>
const picture = document.getElementById("picture");
const when = document.getElementById("when");
function show(frame) {
  if (!frame) return;
  picture.src = frame.url;
  when.textContent = `frame ${frame.frame}: ${frame.start.toFixed(2)} to ${frame.end.toFixed(2)} s of the stream`;
}
const events = new EventSource("/events");
events.onmessage = (message) => show(JSON.parse(message.data));
events.onerror = () => { when.textContent += " (the stream has ended)"; events.close(); };
</script>
</body>
</html>
"""


def check_port(port) -> None:
    if not is_whole(port, 0, 65535):
        raise ConfigError(
            f"--web is {shown(port)}; it must be a port number from 0 (any free port) to 65535",
            hint="e.g. --web 8080, then open the address it prints",
        )


class PageServer(ThreadingHTTPServer):
    """A ``ThreadingHTTPServer`` of at most MAX_CONNECTIONS connections (threads) at once, quiet about clients that
    went away (stderr is the command's progress)."""

    daemon_threads = True  # a connection still open does not hold the command's exit
    request_queue_size = MAX_CONNECTIONS  # a burst is accepted (or refused) at once, not after the client's retries

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler]):
        self.slots = threading.BoundedSemaphore(MAX_CONNECTIONS)
        super().__init__(address, handler)

    def process_request(self, request, client_address) -> None:
        if not self.slots.acquire(blocking=False):
            with contextlib.suppress(OSError):
                cast(socket.socket, request).sendall(BUSY)  # (a TCP server's request) a fresh socket takes these bytes
            self.shutdown_request(request)
            return
        super().process_request(request, client_address)

    def process_request_thread(self, request, client_address) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.slots.release()

    def handle_error(self, request, client_address) -> None:
        """A client that closed or reset its connection mid-answer is not reported; anything else is."""
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class LivePage:
    """The page's server, started at once in a daemon thread; ``show`` announces a frame written in ``folder``."""

    def __init__(self, folder: Path, port: int):
        check_port(port)
        self.folder = folder
        self.changed = threading.Condition()
        self.latest: dict | None = None
        self.version = 0
        self.closing = False
        try:
            self.server = PageServer((ADDRESS, port), self.handler())
        except OSError as exc:
            raise ConfigError(
                f"--web {port}: cannot listen on {ADDRESS}:{port} ({exc.strerror or exc})",
                hint="choose another port, or --web 0 for any free one",
            ) from exc
        self.thread = threading.Thread(target=self.server.serve_forever, name="live-page", daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://{ADDRESS}:{self.server.server_address[1]}/"

    def show(self, name: str, number: int, start: float, end: float) -> None:
        """Frame ``number`` (file ``name`` in the folder, its window ``start``..``end`` s) is the newest."""
        with self.changed:
            self.version += 1
            url = f"/frames/{name}?v={self.version}"  # a run with --overwrite reuses names: no cached picture
            self.latest = {"frame": number, "url": url, "start": start, "end": end}
            self.changed.notify_all()

    def close(self) -> None:
        with self.changed:
            self.closing = True
            self.changed.notify_all()
        self.server.shutdown()
        self.server.server_close()

    def local(self, host: str | None) -> bool:
        """Whether a request's Host header names this server by its loopback address (none: an HTTP/1.0 client,
        not a browser). A page of another site that rebinds its name to 127.0.0.1 sends its own name, and is
        refused the pictures."""
        port = self.server.server_address[1]
        return host is None or host.lower() in (f"{ADDRESS}:{port}", f"localhost:{port}")

    def next_event(self, seen: int) -> tuple[int, dict | None] | None:
        """After version ``seen``: (the version, the newest frame) when it changes, (seen, None) after
        KEEP_ALIVE_SECONDS without a change, None once the page closes."""
        with self.changed:
            self.changed.wait_for(lambda: self.version != seen or self.closing, timeout=KEEP_ALIVE_SECONDS)
            if self.closing:
                return None
            return (self.version, self.latest) if self.version != seen else (seen, None)

    def handler(self) -> type[BaseHTTPRequestHandler]:
        page = self

        class Handler(BaseHTTPRequestHandler):
            timeout = CLIENT_SECONDS  # each read and write of the connection's socket

            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                path = self.path.split("?", 1)[0]
                if not page.local(self.headers.get("Host")):
                    self.send_error(HTTPStatus.FORBIDDEN, "this page answers only at its loopback address")
                elif path == "/":
                    self.answer("text/html; charset=utf-8", PAGE.encode())
                elif path == "/latest":
                    self.answer("application/json", json.dumps(page.latest).encode())
                elif path == "/events":
                    self.events()
                elif path.startswith("/frames/") and FRAME_NAME.match(name := path.removeprefix("/frames/")):
                    file = page.folder / name
                    if file.is_file():
                        self.answer("image/png", file.read_bytes())
                    else:
                        self.send_error(HTTPStatus.NOT_FOUND)
                else:
                    self.send_error(HTTPStatus.NOT_FOUND)

            def answer(self, kind: str, body: bytes) -> None:
                self.send_response(HTTPStatus.OK)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Cache-Control", "no-store")
                self.end_headers()
                self.wfile.write(body)

            def events(self) -> None:
                self.send_response(HTTPStatus.OK)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Cache-Control", "no-store")
                self.end_headers()
                seen = 0
                try:
                    while (event := page.next_event(seen)) is not None:
                        seen, frame = event
                        self.wfile.write(f"data: {json.dumps(frame)}\n\n".encode() if frame else b": alive\n\n")
                        self.wfile.flush()
                except (BrokenPipeError, ConnectionResetError):  # the page was closed
                    return

            def log_message(self, format: str, *args) -> None:
                """Quiet: stderr is the command's progress."""

        return Handler
