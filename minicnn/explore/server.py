"""The local web server of ``minicnn explore``: the page's static files and a JSON API.

Standard library only (``http.server``). It serves nothing but the files of the page shipped
in this package (by name, from a fixed list: a path never reaches the file system) and answers
these questions about the run it was started with:

======================================  ====================================================
``GET  /api/info``                      the run: classes, layers and shapes, summary, filters
``POST /api/analyse[?enhance=0]``       body: an image file; preprocessing steps, every
                                        layer's output (as pictures), probabilities, saliency
``GET  /api/layer?input=ID&layer=N``    one layer's exact output values (float32)
``GET  /api/conv?input=ID&layer=N&channel=C&y=Y&x=X``
                                        how one output of a Conv2d layer is made
``GET  /api/saliency?input=ID&class=K`` saliency for another class
``GET  /api/saliency?input=ID&box=N``   (a detection run) saliency for another box's score
======================================  ====================================================

For a detection run, ``/api/analyse`` answers with the boxes ``minicnn detect`` finds instead
of probabilities (see :func:`detection_payload`).

A bad request gets a 4xx status and ``{"error": "..."}``; an unexpected failure a 500 with a
one-line reason. Neither stops the server.
"""

from __future__ import annotations

import json
import socket
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from urllib.parse import parse_qs, urlsplit

import numpy as np

from . import encode
from .analysis import Explorer, ExploreError
from .runs import open_run

MAX_UPLOAD = 8 * 1024 * 1024        # bytes of an uploaded image file
LOOPBACK_NAMES = ("127.0.0.1", "localhost", "::1")
CONTENT_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
                 ".css": "text/css; charset=utf-8", ".svg": "image/svg+xml",
                 ".png": "image/png"}
# The page loads nothing from elsewhere; the browser enforces it too.
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
       "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")


def static_files() -> dict[str, tuple[bytes, str]]:
    """The page's files by URL path, read once from the package: ``{path: (body, type)}``."""
    folder = resources.files("minicnn.explore") / "static"
    files = {}
    for entry in folder.iterdir():
        suffix = "." + entry.name.rsplit(".", 1)[-1]
        if entry.is_file() and suffix in CONTENT_TYPES:
            files["/static/" + entry.name] = (entry.read_bytes(), CONTENT_TYPES[suffix])
    files["/"] = files["/static/index.html"]
    return files


class ExploreHandler(BaseHTTPRequestHandler):
    """Answers one request; the server holds the :class:`Explorer` and the static files."""

    server: "ExploreServer"
    server_version = "minicnn-explore"
    protocol_version = "HTTP/1.1"

    def log_message(self, format, *args):          # quiet: the terminal shows the address
        pass

    # -- plumbing ----------------------------------------------------------------------------
    def _send(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Content-Security-Policy", CSP)
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, value, status: int = 200) -> None:
        self._send(status, json.dumps(value, default=_jsonable).encode(),
                   "application/json; charset=utf-8")

    def _error(self, status: int, message: str) -> None:
        self._json({"error": message}, status)

    def _guarded(self, handler) -> None:
        try:
            if not self._host_allowed():
                raise ExploreError("this server answers only requests made to its loopback "
                                   "address", 403)
            handler()
        except ExploreError as error:
            self._error(error.status, str(error))
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        except Exception as error:  # a bug: say so in one line, keep serving
            print(f"minicnn explore: error answering {self.command} {self.path}: "
                  f"{type(error).__name__}: {error}", file=sys.stderr)
            self._error(500, f"internal error: {type(error).__name__}: {error}")

    def _host_allowed(self) -> bool:
        """Served on loopback, answer only requests addressed to loopback (a web page on
        another site cannot reach the API through a DNS name re-pointed at 127.0.0.1)."""
        if not self.server.loopback_only:
            return True
        hosts = self.headers.get_all("Host") or [""]
        names = [host.rsplit(":", 1)[0] if not host.startswith("[") else host[1:host.find("]")]
                 for host in hosts]
        return all(name in LOOPBACK_NAMES for name in names)

    def _query(self) -> dict[str, str]:
        query = parse_qs(urlsplit(self.path).query, keep_blank_values=True)
        return {key: values[-1] for key, values in query.items()}

    @staticmethod
    def _int(query: dict, key: str) -> int:
        if key not in query:
            raise ExploreError(f"missing parameter {key!r}")
        try:
            return int(query[key])
        except ValueError:
            raise ExploreError(f"parameter {key!r} must be a whole number, got "
                               f"{query[key]!r}") from None

    @staticmethod
    def _text(query: dict, key: str) -> str:
        if key not in query:
            raise ExploreError(f"missing parameter {key!r}")
        return query[key]

    # -- routes ------------------------------------------------------------------------------
    def do_GET(self) -> None:
        self._guarded(self._get)

    def do_HEAD(self) -> None:
        self._guarded(self._get)

    def do_POST(self) -> None:
        self._guarded(self._post)

    def _get(self) -> None:
        path = urlsplit(self.path).path
        explorer = self.server.explorer
        query = self._query()
        if path in self.server.static:
            body, content_type = self.server.static[path]
            self._send(200, body, content_type)
        elif path == "/api/info":
            self._json(self.server.info)
        elif path == "/api/layer":
            analysis = explorer.get(self._text(query, "input"))
            index = explorer.layer_index(self._text(query, "layer"))
            self._json({"name": explorer.layer_names[index],
                        "kind": type(explorer.layers[index]).__name__,
                        **encode.exact(analysis.outputs[index])})
        elif path == "/api/conv":
            self._json(explorer.convolution(self._text(query, "input"),
                                            self._text(query, "layer"),
                                            self._int(query, "channel"), self._int(query, "y"),
                                            self._int(query, "x")))
        elif path == "/api/saliency":
            # A class (classifier) or a box (detector): the explorer says which.
            target = explorer.saliency_target
            index = self._int(query, target)
            gradient = explorer.saliency(self._text(query, "input"), index)
            self._json({target: index, **encode.exact(gradient)})
        else:
            raise ExploreError(f"nothing at {path!r}", 404)

    def _post(self) -> None:
        path = urlsplit(self.path).path
        if path != "/api/analyse":
            self._drain()
            raise ExploreError(f"nothing to POST to at {path!r}", 404)
        body = self._read_body()
        enhance = self._query().get("enhance", "1") not in ("0", "false", "no")
        explorer = self.server.explorer
        self._json(explorer.payload(*explorer.analyse(body, enhance=enhance)))

    def _read_body(self) -> bytes:
        length = self.headers.get("Content-Length")
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked" or length is None:
            self.close_connection = True
            raise ExploreError("send the image with a Content-Length", 411)
        try:
            size = int(length)
        except ValueError:
            self.close_connection = True
            raise ExploreError(f"bad Content-Length {length!r}") from None
        if size > MAX_UPLOAD:
            # Refuse without reading it; the connection cannot be reused after an unread body.
            self.close_connection = True
            raise ExploreError(f"the image is {size:,} bytes; at most {MAX_UPLOAD:,} are "
                               "accepted", 413)
        if size <= 0:
            raise ExploreError("the request has no image in its body")
        return self.rfile.read(size)

    def _drain(self) -> None:
        """Read (and drop) a small body, so the connection stays usable."""
        try:
            size = int(self.headers.get("Content-Length", "0"))
        except ValueError:
            size = -1
        if 0 < size <= MAX_UPLOAD:
            self.rfile.read(size)
        elif size != 0:
            self.close_connection = True


def _jsonable(value):
    if isinstance(value, np.ndarray):
        return encode.exact(value)
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    raise TypeError(f"cannot send a {type(value).__name__} as JSON")


class ExploreServer(ThreadingHTTPServer):
    """A threading HTTP server that holds one :class:`Explorer`."""

    daemon_threads = True           # Ctrl-C does not wait for a browser's open connection
    allow_reuse_address = True

    def __init__(self, explorer: Explorer, host: str = "127.0.0.1", port: int = 8765):
        if ":" in host:
            self.address_family = socket.AF_INET6
        self.explorer = explorer
        self.info = explorer.info()
        self.static = static_files()
        self.loopback_only = host in LOOPBACK_NAMES
        super().__init__((host, port), ExploreHandler)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        shown = f"[{host}]" if ":" in host else host
        return f"http://{shown}:{port}/"


def start_in_thread(explorer: Explorer, host: str = "127.0.0.1",
                    port: int = 0) -> tuple[ExploreServer, threading.Thread]:
    """Serve on a background thread (for tests and notebooks); ``server.shutdown()`` stops it."""
    server = ExploreServer(explorer, host, port)
    thread = threading.Thread(target=server.serve_forever, name="minicnn-explore", daemon=True)
    thread.start()
    return server, thread


def serve(run, host: str = "127.0.0.1", port: int = 8765, open_browser: bool = True,
          data_dir=None, print_fn=print) -> int:
    """Serve the page for ``run`` until Ctrl-C; the ``minicnn explore`` command.

    Parameters
    ----------
    run : path
        A run folder written by ``minicnn train``.
    host : str
        The interface to bind; anything but loopback prints a warning.
    port : int
        0 picks a free port.
    open_browser : bool
        Open the page in the default browser, if there is one.

    Returns
    -------
    int
        0 after Ctrl-C.
    """
    if host not in LOOPBACK_NAMES:
        print(f"minicnn explore: warning: --host {host} lets other machines on the network "
              "use this page and its API; it has no password", file=sys.stderr)
    explorer = open_run(run, data_dir=data_dir)
    _warm_up(explorer)
    try:
        server = ExploreServer(explorer, host, port)
    except OSError as error:
        raise ExploreError(f"cannot listen on {host}:{port}: {error.strerror or error} (try "
                           "--port 0 for a free port)") from error
    print_fn(f"minicnn explore: {explorer.name} ({explorer.meta.model} on "
             f"{explorer.meta.dataset}) at {server.url}  (Ctrl-C stops)", flush=True)
    if open_browser:
        threading.Thread(target=_open_browser, args=(server.url,), daemon=True).start()
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        print_fn("minicnn explore: stopped", flush=True)
    finally:
        server.server_close()
    return 0


def _warm_up(explorer: Explorer) -> None:
    """One blank image through forward and backward, so that kernel compilation (Numba) happens
    now and not at the learner's first stroke."""
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.new("L", (28, 28)).save(buffer, format="PNG")
    explorer.analyse(buffer.getvalue())


def _open_browser(url: str) -> None:
    import webbrowser

    try:
        webbrowser.open(url)
    except Exception:  # no browser here: the printed address is enough
        pass
