"""Downloading data-set files, verified, with nothing half-done left behind.

Each file is streamed to a temporary ``.part`` file in its destination folder, its size
(``Content-Length`` and the registry's), SHA-256 and structure are checked, and only then is
it renamed into place (an atomic ``os.replace``). A dropped connection, a bad checksum or
malformed content deletes the temporary file and moves on to the next mirror. Only the
standard library (:mod:`urllib`) talks HTTP.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import shutil
import sys
import tarfile
import tempfile
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path

from .errors import ChecksumError, DataError, DownloadError
from .registry import DatasetSpec, RemoteFile
from .verify import read_checked, sha256_file

USER_AGENT = "minicnn-data/0.1 (+https://pypi.org/project/minicnn/)"
_CHUNK = 1 << 16


def _progress_bar(total: int | None, desc: str, enabled: bool | None):
    from tqdm import tqdm

    if enabled is None:
        enabled = sys.stderr.isatty()
    return tqdm(total=total, desc=desc, unit="B", unit_scale=True, unit_divisor=1024,
                disable=not enabled, leave=False)


def _temp_path(dest: Path) -> Path:
    fd, name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    os.close(fd)
    return Path(name)


def _fetch(url: str, out, timeout: float, progress: bool | None, desc: str) -> tuple[int, str]:
    """Stream ``url`` into the open file ``out``; returns (bytes written, sha256 hex)."""
    if not url.lower().startswith(("http://", "https://")):
        raise DataError(f"only http:// and https:// URLs are downloaded, got {url!r}")
    request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
    h = hashlib.sha256()
    got = 0
    with urllib.request.urlopen(request, timeout=timeout) as response:
        length = response.headers.get("Content-Length")
        length = int(length) if length and length.isdigit() else None
        with _progress_bar(length, desc, progress) as bar:
            while chunk := response.read(_CHUNK):
                out.write(chunk)
                h.update(chunk)
                got += len(chunk)
                bar.update(len(chunk))
    if length is not None and got != length:
        raise DataError(f"connection closed early: received {got} of {length} bytes")
    return got, h.hexdigest()


def download_file(urls: Sequence[str], dest: str | os.PathLike, *, sha256: str | None = None,
                  content_sha256: str | None = None, size: int | None = None,
                  check: Callable[[Path], object] | None = None,
                  progress: bool | None = None, timeout: float = 60.0) -> Path:
    """Download one file from the first mirror that delivers it intact.

    Parameters
    ----------
    urls : sequence of str
        Full URLs of the same file, tried in turn (``http://`` or ``https://`` only).
    dest : path-like
        Final path; its folder is created. Written only once the file is verified.
    sha256 : str, optional
        Expected SHA-256 of the bytes as served.
    content_sha256 : str, optional
        Expected SHA-256 of the content after gunzip (of the bytes themselves when the
        download is not gzip).
    size : int, optional
        Expected size in bytes as served.
    check : callable(Path), optional
        Called on the temporary file; raises :class:`DataError` when its content is wrong
        (e.g. an IDX header with the wrong shape).
    progress : bool or None
        Show a tqdm bar; ``None``: only when stderr is a terminal.
    timeout : float
        Seconds a connection may stall.

    Returns
    -------
    Path
        ``dest``.

    Raises
    ------
    DownloadError
        When every mirror failed; the message has one line per URL saying why.
    """
    from .locate import ENV_OFFLINE, offline

    dest = Path(dest)
    if offline():
        raise DownloadError(f"not downloading {dest.name}: {ENV_OFFLINE} is set "
                            f"(offline mode)")
    dest.parent.mkdir(parents=True, exist_ok=True)
    urls = list(urls)
    if not urls:
        raise DownloadError(f"no download URL for {dest.name}")
    failures = []
    for url in urls:
        tmp = _temp_path(dest)
        try:
            with open(tmp, "wb") as out:
                got, digest = _fetch(url, out, timeout, progress, dest.name)
            if size is not None and got != size:
                raise DataError(f"expected {size} bytes, received {got}")
            if sha256 and digest != sha256:
                raise ChecksumError(f"SHA-256 mismatch: expected {sha256}, got {digest}")
            if content_sha256:
                content = sha256_file(tmp, decompress=True)
                if content != content_sha256:
                    raise ChecksumError(f"SHA-256 of the uncompressed content mismatch: "
                                        f"expected {content_sha256}, got {content}")
            if check is not None:
                check(tmp)
            os.replace(tmp, dest)
            return dest
        except (DataError, OSError, http.client.HTTPException, ValueError) as exc:
            reason = exc.reason if isinstance(exc, urllib.error.URLError) and not isinstance(
                exc, urllib.error.HTTPError) else exc
            reason = str(reason).replace(str(tmp), "downloaded file")
            failures.append(f"{url}: {reason}")
        finally:
            tmp.unlink(missing_ok=True)
    raise DownloadError(f"could not download {dest.name}; every mirror failed:\n  "
                        + "\n  ".join(failures))


def _extract_members(archive: Path, members: Sequence[str], dest_dir: Path,
                     check: Callable[[str, Path], object] | None) -> list[Path]:
    """Extract the named regular-file members of a tar archive, each verified and renamed
    into ``dest_dir/<member path>``; nothing else is extracted (no path traversal)."""
    out = []
    try:
        with tarfile.open(archive, "r:*") as tar:
            for name in members:
                try:
                    info = tar.getmember(name)
                except KeyError:
                    raise DataError(f"{archive}: archive has no member {name!r}") from None
                if not info.isfile() or name.startswith("/") or ".." in Path(name).parts:
                    raise DataError(f"{archive}: member {name!r} is not a plain file")
                target = dest_dir / name
                target.parent.mkdir(parents=True, exist_ok=True)
                tmp = _temp_path(target)
                try:
                    with tar.extractfile(info) as src, open(tmp, "wb") as dst:
                        shutil.copyfileobj(src, dst, _CHUNK)
                    if check is not None:
                        check(Path(name).name, tmp)
                    os.replace(tmp, target)
                finally:
                    tmp.unlink(missing_ok=True)
                out.append(target)
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise DataError(f"{archive}: cannot extract ({type(exc).__name__}: {exc})") from exc
    return out


def _structure_check(spec: DatasetSpec, filename: str) -> Callable[[Path], object] | None:
    names = {n for files in spec.splits.values() for n in files}
    base = filename[:-3] if filename.endswith(".gz") else filename
    if base not in names:
        return None
    return lambda path: read_checked(spec, base, path)


def fetch_remote(spec: DatasetSpec, remote: RemoteFile, dest_dir: str | os.PathLike,
                 mirrors: Sequence[str] | None = None, progress: bool | None = None,
                 timeout: float = 60.0) -> list[Path]:
    """Download one :class:`RemoteFile` of ``spec`` into ``dest_dir``, verified.

    An archive (``remote.members``) is verified, its members extracted (each checked and
    renamed into place) and then deleted.

    Returns
    -------
    list of Path
        The file, or the extracted members.
    """
    dest_dir = Path(dest_dir)
    mirrors = spec.mirrors if mirrors is None else mirrors
    urls = [m if m.endswith(remote.filename) else m.rstrip("/") + "/" + remote.filename
            for m in mirrors]
    if not urls:
        raise DownloadError(f"data set {spec.name!r} has no download mirrors")
    dest = dest_dir / remote.filename
    if not remote.members:
        return [download_file(urls, dest, sha256=remote.sha256,
                              content_sha256=remote.content_sha256, size=remote.size,
                              check=_structure_check(spec, remote.filename),
                              progress=progress, timeout=timeout)]
    if not (dest.is_file() and remote.sha256 and sha256_file(dest) == remote.sha256):
        download_file(urls, dest, sha256=remote.sha256, size=remote.size, progress=progress,
                      timeout=timeout)

    def check(name: str, path: Path):
        fn = _structure_check(spec, name)
        if fn is not None:
            fn(path)

    paths = _extract_members(dest, remote.members, dest_dir, check)
    dest.unlink(missing_ok=True)
    return paths


def download_dataset(name: str | DatasetSpec, split: str | None = None,
                     dest_dir: str | os.PathLike | None = None,
                     mirrors: Sequence[str] | None = None, progress: bool | None = None,
                     timeout: float = 60.0) -> list[Path]:
    """Download the files of a registered data set that ``dest_dir`` does not have yet.

    Parameters
    ----------
    name : str or DatasetSpec
    split : {"train", "test"} or None
        Only this split's files; ``None``: all.
    dest_dir : path-like, optional
        Default: the data set's folder in the user cache (``~/.cache/minicnn/<name>``).
    mirrors : sequence of str, optional
        Base URLs to use instead of the registered ones.

    Returns
    -------
    list of Path
        The files downloaded (empty when all were there already).

    Raises
    ------
    DownloadError
        When a file could not be fetched intact from any mirror, or ``MINICNN_OFFLINE`` is set.
    """
    from .locate import cache_dir, find_file
    from .registry import get_spec

    spec = name if isinstance(name, DatasetSpec) else get_spec(name)
    if not spec.needs_files:
        return []
    dest_dir = Path(dest_dir) if dest_dir is not None else cache_dir() / spec.dirnames[0]
    wanted = [n for s, names in spec.splits.items() if split in (None, s) for n in names]
    todo: list[RemoteFile] = []
    for name in wanted:
        have = find_file(dest_dir, name) or (find_file(dest_dir / spec.subdir, name)
                                             if spec.subdir else None)
        if have is None:
            remote = spec.remote_for(name)
            if remote is None:
                raise DownloadError(f"data set {spec.name!r}: no download source for {name}")
            if remote not in todo:
                todo.append(remote)
    paths = []
    for remote in todo:
        paths.extend(fetch_remote(spec, remote, dest_dir, mirrors, progress, timeout))
    return paths
