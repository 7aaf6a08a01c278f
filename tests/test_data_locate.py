"""Where data sets are looked for, in which order, and what is said when they are missing."""

from __future__ import annotations

import numpy as np
import pytest

from data_helpers import isolated_env, tiny_spec, write_tiny_idx_set  # noqa: F401
from minicnn.data import (DataError, DatasetNotFoundError, cache_dir, dataset_files,
                          load_dataset)
from minicnn.data.locate import search_roots
from minicnn.data.registry import REGISTRY


@pytest.fixture
def tiny(monkeypatch, isolated_env):  # noqa: F811
    spec = tiny_spec()
    monkeypatch.setitem(REGISTRY, spec.name, spec)
    return spec


def test_cache_dir_resolution(monkeypatch, tmp_path):
    monkeypatch.setenv("MINICNN_CACHE_DIR", str(tmp_path / "explicit"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir() == tmp_path / "explicit"
    monkeypatch.delenv("MINICNN_CACHE_DIR")
    assert cache_dir() == tmp_path / "xdg" / "minicnn"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache_dir() == tmp_path / "home" / ".cache" / "minicnn"


def test_order_explicit_beats_env_beats_cache_beats_system(tmp_path, monkeypatch, tiny,
                                                           isolated_env):  # noqa: F811
    explicit, env = tmp_path / "explicit", tmp_path / "env"
    for root in (explicit, env, isolated_env["cache"], isolated_env["system"]):
        write_tiny_idx_set(root / "tiny")
    monkeypatch.setenv("MINICNN_DATA_DIR", str(env))
    roots = [r.path for r in search_roots(explicit)]
    assert roots == [explicit, env, isolated_env["cache"], isolated_env["system"]]

    def where(data_dir=None):
        return dataset_files("tiny", "train", data_dir=data_dir, download=False)[0].parent

    assert where(explicit) == explicit / "tiny"
    assert where() == env / "tiny"
    monkeypatch.delenv("MINICNN_DATA_DIR")
    assert where() == isolated_env["cache"] / "tiny"
    for f in (isolated_env["cache"] / "tiny").iterdir():
        f.unlink()
    assert where() == isolated_env["system"] / "tiny"
    # an explicit dir without the data falls through to the next place
    assert where(tmp_path / "empty") == isolated_env["system"] / "tiny"


def test_flat_layout_gz_and_raw(tmp_path, tiny):
    arrays = write_tiny_idx_set(tmp_path / "flat", compress=False)
    ds = load_dataset("tiny", "test", data_dir=tmp_path / "flat", download=False)
    assert ds.images.shape == (3, 1, 4, 4)
    np.testing.assert_array_equal(ds.images[:, 0], arrays["t10k-images-idx3-ubyte"])
    assert ds.source == str(tmp_path / "flat")
    # <dir>/<name>/ is preferred over files directly in <dir>
    write_tiny_idx_set(tmp_path / "flat" / "tiny", compress=True)
    ds = load_dataset("tiny", "test", data_dir=tmp_path / "flat", download=False)
    assert ds.source == str(tmp_path / "flat" / "tiny")


def test_env_var_may_list_several_folders(tmp_path, monkeypatch, tiny):
    write_tiny_idx_set(tmp_path / "b" / "tiny")
    monkeypatch.setenv("MINICNN_DATA_DIR", f"{tmp_path / 'a'}:{tmp_path / 'b'}")
    assert dataset_files("tiny", "train", download=False)[0].parent == tmp_path / "b" / "tiny"


def test_not_found_lists_every_place(tmp_path, monkeypatch, tiny, isolated_env):  # noqa: F811
    monkeypatch.setenv("MINICNN_DATA_DIR", str(tmp_path / "env"))
    (tmp_path / "given").mkdir()
    (tmp_path / "given" / "t10k-images-idx3-ubyte.gz").write_bytes(b"")
    with pytest.raises(DatasetNotFoundError) as info:
        load_dataset("tiny", "test", data_dir=tmp_path / "given", download=False)
    msg = str(info.value)
    for place in (tmp_path / "given" / "tiny", tmp_path / "given", tmp_path / "env" / "tiny",
                  isolated_env["cache"] / "tiny", isolated_env["system"] / "tiny"):
        assert f"{place}  (" in msg
    assert "has only t10k-images-idx3-ubyte.gz" in msg
    assert "--data-dir" in msg and "MINICNN_DATA_DIR" in msg
    assert "download=False" in msg
    assert "'tiny' (test split)" in msg


def test_offline_env_never_downloads(tmp_path, monkeypatch, isolated_env):  # noqa: F811
    spec = tiny_spec(mirrors=("http://127.0.0.1:9/never/",))
    monkeypatch.setitem(REGISTRY, spec.name, spec)
    with pytest.raises(DatasetNotFoundError, match="MINICNN_OFFLINE=1"):
        load_dataset("tiny", "train", download=True)
    assert not isolated_env["cache"].exists()


def test_corrupt_local_files_are_named(tmp_path, tiny):
    folder = tmp_path / "tiny"
    write_tiny_idx_set(folder)
    path = folder / "train-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[:-12])
    with pytest.raises(DataError, match=r"train-images-idx3-ubyte\.gz"):
        load_dataset("tiny", "train", data_dir=tmp_path, download=False)
    # a well-formed file of the wrong shape is rejected too
    write_tiny_idx_set(folder, n_train=5)
    with pytest.raises(DataError, match=r"train-images-idx3-ubyte\.gz: expected tiny train "
                                        r"images of shape \(6, 4, 4\)"):
        load_dataset("tiny", "train", data_dir=tmp_path, download=False)


def test_label_files_checked_against_known_hash(tmp_path, tiny):
    """Same file names, other content (as with MNIST vs Fashion-MNIST): caught on load."""
    write_tiny_idx_set(tmp_path / "tiny", seed=5)
    with pytest.raises(DataError, match="belongs to another data set"):
        load_dataset("tiny", "test", data_dir=tmp_path, download=False)
