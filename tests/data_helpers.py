"""Shared helpers for the tests of minicnn.data (imported by tests/test_data_*.py)."""

from __future__ import annotations

import gzip
import hashlib
import http.server
import os
import threading
from pathlib import Path

import numpy as np
import pytest

from minicnn.data import idx
from minicnn.data.registry import DatasetSpec, RemoteFile

REPO = Path(__file__).resolve().parents[1]
IDX_SPLITS = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
              "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}


# Read once at import, before any fixture clears it for isolation.
_REAL_DATA_ENV = os.environ.get("MINICNN_DATA_DIR")


def real_data_dir(name: str = "mnist") -> Path:
    """The folder of a real data set under $MINICNN_DATA_DIR (as set when the tests
    started), or skip the test."""
    env = _REAL_DATA_ENV
    if not env:
        pytest.skip("MINICNN_DATA_DIR is not set: no real data")
    for base in (Path(env), REPO / env):
        folder = base / name
        if (folder / "t10k-labels-idx1-ubyte.gz").is_file() or \
                (folder / "t10k-labels-idx1-ubyte").is_file():
            return folder.resolve()
    pytest.skip(f"{name} files not found under MINICNN_DATA_DIR={env}")


@pytest.fixture
def isolated_env(tmp_path, monkeypatch):
    """No real data dir, an empty cache and system dir under tmp_path, offline by default."""
    cache = tmp_path / "cache"
    system = tmp_path / "system"
    monkeypatch.delenv("MINICNN_DATA_DIR", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setenv("MINICNN_CACHE_DIR", str(cache))
    monkeypatch.setenv("MINICNN_OFFLINE", "1")
    monkeypatch.setattr("minicnn.data.locate.SYSTEM_DATA_DIR", system)
    return {"cache": cache, "system": system}


def tiny_arrays(n: int, seed: int, h: int = 4, w: int = 4, classes: int = 3):
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n, h, w), dtype=np.uint8)
    labels = (np.arange(n) % classes).astype(np.uint8)
    return images, labels


def idx_bytes(array: np.ndarray) -> bytes:
    header = bytes([0, 0, 0x08, array.ndim]) + np.asarray(array.shape, ">u4").tobytes()
    return header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()


def write_tiny_idx_set(folder: Path, seed: int = 0, compress: bool = True,
                       n_train: int = 6, n_test: int = 3) -> dict[str, np.ndarray]:
    """Write the four IDX files of the `tiny_spec` data set into `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {}
    for split, n, s in (("train", n_train, seed), ("test", n_test, seed + 100)):
        images, labels = tiny_arrays(n, s)
        for name, arr in zip(IDX_SPLITS[split], (images, labels)):
            idx.write_idx(folder / (name + (".gz" if compress else "")), arr, compress=compress)
            arrays[name] = arr
    return arrays


def tiny_spec(name: str = "tiny", mirrors=(), seed: int = 0, with_hashes: bool = True,
              ) -> DatasetSpec:
    """A 4x4, 3-class IDX data set (6 train, 3 test) whose content is tiny_arrays(seed)."""
    remote = []
    for split, n, s in (("train", 6, seed), ("test", 3, seed + 100)):
        images, labels = tiny_arrays(n, s)
        for fname, arr in zip(IDX_SPLITS[split], (images, labels)):
            digest = hashlib.sha256(idx_bytes(arr)).hexdigest() if with_hashes else None
            remote.append(RemoteFile(filename=fname + ".gz", content_sha256=digest))
    return DatasetSpec(name=name, title="Tiny test set", format="idx", image_shape=(1, 4, 4),
                       classes=("a", "b", "c"), mean=(0.5,), std=(0.25,), splits=IDX_SPLITS,
                       num_samples={"train": 6, "test": 3}, remote=tuple(remote),
                       mirrors=tuple(mirrors), dirnames=(name,))


def gz(data: bytes) -> bytes:
    return gzip.compress(data, mtime=0)


class FileServer:
    """A local HTTP server on 127.0.0.1 serving bytes from a dict, in a daemon thread.

    Paths: ``/good/<name>`` serves ``files[name]``; ``/bad/<name>`` the same length with
    bytes flipped; ``/drop/<name>`` announces the full Content-Length, sends half and closes;
    anything else is 404. ``requests`` records every path asked for.
    """

    def __init__(self, files: dict[str, bytes]):
        self.files = files
        self.requests: list[str] = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            timeout = 5

            def log_message(self, *args):  # keep test output quiet
                pass

            def do_GET(self):
                outer.requests.append(self.path)
                parts = self.path.strip("/").split("/", 1)
                if len(parts) != 2 or parts[1] not in outer.files:
                    self.send_error(404)
                    return
                mode, name = parts
                data = outer.files[name]
                if mode == "bad":
                    body = bytearray(data)
                    for i in range(len(body) // 3, len(body), max(1, len(body) // 7)):
                        body[i] ^= 0xFF
                    data = bytes(body)
                elif mode not in ("good", "drop"):
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Type", "application/octet-stream")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if mode == "drop":
                    self.wfile.write(data[: len(data) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.wfile.write(data)

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever,
                                       kwargs={"poll_interval": 0.05}, daemon=True)

    @property
    def base(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    def url(self, mode: str, name: str = "") -> str:
        return f"{self.base}/{mode}/{name}"

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


def leftovers(folder: Path) -> list[str]:
    """Temporary or partial files left in a folder tree."""
    if not folder.exists():
        return []
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*")
                  if p.is_file() and (p.name.endswith(".part") or p.name.startswith(".")))
