"""Downloading against a local HTTP server: good, corrupted and dropped transfers."""

from __future__ import annotations

import hashlib
import io
import tarfile

import numpy as np
import pytest

from data_helpers import (FileServer, gz, idx_bytes, isolated_env, leftovers,  # noqa: F401
                          tiny_arrays, tiny_spec)
from minicnn.data import (ChecksumError, DataError, DatasetNotFoundError, DatasetSpec,
                          DownloadError, RemoteFile, download_dataset, download_file,
                          load_dataset)
from minicnn.data.registry import REGISTRY

PAYLOAD = bytes(range(256)) * 40
PAYLOAD_SHA = hashlib.sha256(PAYLOAD).hexdigest()


@pytest.fixture
def server(monkeypatch):
    monkeypatch.delenv("MINICNN_OFFLINE", raising=False)
    files = {"blob.bin": PAYLOAD}
    with FileServer(files) as srv:
        yield srv


def test_good_file_lands_verified(tmp_path, server):
    dest = tmp_path / "cache" / "blob.bin"
    out = download_file([server.url("good", "blob.bin")], dest, sha256=PAYLOAD_SHA,
                        size=len(PAYLOAD), progress=True)     # the tqdm bar path too
    assert out == dest and dest.read_bytes() == PAYLOAD
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("first", ["bad", "drop", "missing"])
def test_falls_through_to_next_mirror(tmp_path, server, first):
    dest = tmp_path / "blob.bin"
    name = "blob.bin" if first != "missing" else "other.bin"
    download_file([server.url(first, name), server.url("good", "blob.bin")], dest,
                  sha256=PAYLOAD_SHA, progress=False)
    assert dest.read_bytes() == PAYLOAD
    assert server.requests == [f"/{first}/{name}", "/good/blob.bin"]
    assert leftovers(tmp_path) == []


def test_bad_hash_leaves_nothing(tmp_path, server):
    dest = tmp_path / "blob.bin"
    with pytest.raises(DownloadError, match="SHA-256 mismatch") as info:
        download_file([server.url("bad", "blob.bin")], dest, sha256=PAYLOAD_SHA,
                      progress=False)
    assert server.url("bad", "blob.bin") in str(info.value)
    assert not dest.exists() and list(tmp_path.iterdir()) == []


def test_dropped_connection_leaves_nothing(tmp_path, server):
    dest = tmp_path / "blob.bin"
    # no checksum at all: the short read alone must be caught (Content-Length)
    with pytest.raises(DownloadError, match=r"closed early: received 5120 of 10240 bytes"):
        download_file([server.url("drop", "blob.bin")], dest, progress=False)
    assert list(tmp_path.iterdir()) == []


def test_every_mirror_failing_is_reported(tmp_path, server):
    dest = tmp_path / "blob.bin"
    urls = [server.url("bad", "blob.bin"), server.url("drop", "blob.bin"),
            server.url("good", "nothing-here"), "http://127.0.0.1:1/refused",
            "file:///etc/passwd"]
    with pytest.raises(DownloadError) as info:
        download_file(urls, dest, sha256=PAYLOAD_SHA, progress=False, timeout=5)
    msg = str(info.value)
    assert all(u in msg for u in urls)
    assert "404" in msg and "only http:// and https://" in msg
    assert list(tmp_path.iterdir()) == []


def test_offline_mode_blocks_download_file(tmp_path, server, monkeypatch):
    monkeypatch.setenv("MINICNN_OFFLINE", "1")
    with pytest.raises(DownloadError, match="offline"):
        download_file([server.url("good", "blob.bin")], tmp_path / "b", progress=False)
    assert server.requests == [] and list(tmp_path.iterdir()) == []


def test_download_dataset_fetches_only_missing_files(tmp_path, monkeypatch):
    monkeypatch.delenv("MINICNN_OFFLINE", raising=False)
    spec = tiny_spec()
    with FileServer(_tiny_idx_files()) as srv:
        got = download_dataset(spec, "train", tmp_path, mirrors=[srv.base + "/good/"],
                               progress=False)
        assert sorted(p.name for p in got) == ["train-images-idx3-ubyte.gz",
                                               "train-labels-idx1-ubyte.gz"]
        assert download_dataset(spec, None, tmp_path, mirrors=[srv.base + "/good/"],
                                progress=False) != []            # the test split
        assert download_dataset(spec, None, tmp_path, mirrors=[srv.base + "/good/"],
                                progress=False) == []            # nothing left to fetch
        assert len(srv.requests) == 4


def test_content_checksum_and_structure_check(tmp_path, monkeypatch):
    monkeypatch.delenv("MINICNN_OFFLINE", raising=False)
    images, _ = tiny_arrays(6, 0)
    raw = idx_bytes(images)
    files = {"good.gz": gz(raw), "other.gz": gz(raw[:-1] + b"\x00")}
    content = hashlib.sha256(raw).hexdigest()
    with FileServer(files) as srv:
        download_file([srv.url("good", "other.gz"), srv.url("good", "good.gz")],
                      tmp_path / "x.gz", content_sha256=content, progress=False)
        assert (tmp_path / "x.gz").read_bytes() == files["good.gz"]

        def reject(path):
            raise DataError(f"{path}: wrong shape")

        with pytest.raises(DownloadError, match="wrong shape"):
            download_file([srv.url("good", "good.gz")], tmp_path / "y.gz", check=reject,
                          progress=False)
    assert not (tmp_path / "y.gz").exists() and leftovers(tmp_path) == []


def _tiny_idx_files(seed=0):
    files = {}
    for split, n, s in (("train", 6, seed), ("test", 3, seed + 100)):
        images, labels = tiny_arrays(n, s)
        prefix = "train" if split == "train" else "t10k"
        files[f"{prefix}-images-idx3-ubyte.gz"] = gz(idx_bytes(images))
        files[f"{prefix}-labels-idx1-ubyte.gz"] = gz(idx_bytes(labels))
    return files


def test_load_dataset_downloads_into_cache(monkeypatch, isolated_env):  # noqa: F811
    monkeypatch.delenv("MINICNN_OFFLINE")
    with FileServer(_tiny_idx_files()) as srv:
        spec = tiny_spec(mirrors=(srv.base + "/bad/", srv.base + "/good/"))
        monkeypatch.setitem(REGISTRY, spec.name, spec)
        ds = load_dataset("tiny", "test", progress=False)
        assert len(ds) == 3 and ds.source == str(isolated_env["cache"] / "tiny")
        np.testing.assert_array_equal(ds.images[:, 0], tiny_arrays(3, 100)[0])
        assert sorted(p.name for p in (isolated_env["cache"] / "tiny").iterdir()) == [
            "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"]
        assert srv.requests == ["/bad/t10k-images-idx3-ubyte.gz",
                                "/good/t10k-images-idx3-ubyte.gz",
                                "/bad/t10k-labels-idx1-ubyte.gz",
                                "/good/t10k-labels-idx1-ubyte.gz"]
        n = len(srv.requests)
        load_dataset("tiny", "test", progress=False)        # now found in the cache
        assert len(srv.requests) == n
    assert leftovers(isolated_env["cache"]) == []


def test_failed_download_leaves_cache_clean(monkeypatch, isolated_env):  # noqa: F811
    monkeypatch.delenv("MINICNN_OFFLINE")
    with FileServer(_tiny_idx_files()) as srv:
        spec = tiny_spec(mirrors=(srv.base + "/bad/", srv.base + "/drop/"))
        monkeypatch.setitem(REGISTRY, spec.name, spec)
        with pytest.raises(DatasetNotFoundError) as info:
            load_dataset("tiny", "train", progress=False)
        msg = str(info.value)
        assert "Download failed" in msg and "closed early" in msg
        assert "/bad/train-images-idx3-ubyte.gz: downloaded file: corrupted" in msg
        assert ".part" not in msg
        assert isinstance(info.value.__cause__, DownloadError)
    cache = isolated_env["cache"] / "tiny"
    assert not cache.exists() or list(cache.iterdir()) == []
    # download=False never contacts the server
    with FileServer(_tiny_idx_files()) as srv:
        spec = tiny_spec(mirrors=(srv.base + "/good/",))
        monkeypatch.setitem(REGISTRY, spec.name, spec)
        with pytest.raises(DatasetNotFoundError, match="download=False"):
            load_dataset("tiny", "train", download=False)
        assert srv.requests == []


def _cifar_like_archive(n_per_file=2):
    rng = np.random.default_rng(0)
    buf = io.BytesIO()
    names = [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name in names + ["batches.meta.txt", "readme.html"]:
            if name.endswith(".bin"):
                labels = rng.integers(0, 10, (n_per_file, 1), dtype=np.uint8)
                pixels = rng.integers(0, 256, (n_per_file, 3072), dtype=np.uint8)
                data = np.concatenate([labels, pixels], 1).tobytes()
            else:
                data = b"airplane\nautomobile\n"
            info = tarfile.TarInfo(f"cifar-10-batches-bin/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def test_archive_download_and_extract(monkeypatch, isolated_env):  # noqa: F811
    monkeypatch.delenv("MINICNN_OFFLINE")
    archive = _cifar_like_archive()
    train = tuple(f"data_batch_{i}.bin" for i in range(1, 6))
    members = tuple(f"cifar-10-batches-bin/{n}"
                    for n in (*train, "test_batch.bin", "batches.meta.txt"))
    with FileServer({"tiny-cifar.tar.gz": archive}) as srv:
        spec = DatasetSpec(
            name="tinycifar", title="Tiny CIFAR", format="cifar10", image_shape=(3, 32, 32),
            classes=tuple("abcdefghij"), mean=(0.5,) * 3, std=(0.25,) * 3,
            splits={"train": train, "test": ("test_batch.bin",)},
            num_samples={"train": 10, "test": 2},
            remote=(RemoteFile("tiny-cifar.tar.gz", sha256=hashlib.sha256(archive).hexdigest(),
                               size=len(archive), members=members),),
            mirrors=(srv.base + "/drop/", srv.base + "/good/"), dirnames=("tinycifar",),
            subdir="cifar-10-batches-bin")
        monkeypatch.setitem(REGISTRY, spec.name, spec)
        ds = load_dataset("tinycifar", "train", progress=False)
        assert ds.images.shape == (10, 3, 32, 32)
        test = load_dataset("tinycifar", "test", progress=False)
        assert len(test) == 2
        assert srv.requests == ["/drop/tiny-cifar.tar.gz", "/good/tiny-cifar.tar.gz"]
    folder = isolated_env["cache"] / "tinycifar"
    assert sorted(p.name for p in folder.iterdir()) == ["cifar-10-batches-bin"]  # archive gone
    assert len(list((folder / "cifar-10-batches-bin").iterdir())) == 7
    assert leftovers(folder) == []


def test_verify_detects_checksum_mismatch(tmp_path, monkeypatch, isolated_env):  # noqa: F811
    from minicnn.data import verify_dataset

    spec = tiny_spec()
    monkeypatch.setitem(REGISTRY, spec.name, spec)
    files = _tiny_idx_files()
    (tmp_path / "tiny").mkdir()
    for name, data in files.items():
        (tmp_path / "tiny" / name).write_bytes(data)
    report = verify_dataset("tiny", tmp_path)
    assert [r["checked"] for r in report] == ["content sha256"] * 4
    images, _ = tiny_arrays(6, 0)
    images[0, 0, 0] ^= 1
    (tmp_path / "tiny" / "train-images-idx3-ubyte.gz").write_bytes(gz(idx_bytes(images)))
    with pytest.raises(ChecksumError, match="train-images-idx3-ubyte.gz"):
        verify_dataset("tiny", tmp_path)
