"""Where data-set files are looked for, and finding them there.

Search order (first place holding every file of the split wins):

1. the ``data_dir`` argument (``--data-dir`` on the command line);
2. the environment variable ``MINICNN_DATA_DIR`` (several folders separated by ``os.pathsep``);
3. the user cache: ``$MINICNN_CACHE_DIR``, else ``$XDG_CACHE_HOME/minicnn``, else
   ``~/.cache/minicnn`` -- where downloads go;
4. Debian's ``/usr/share/datasets/<name>`` (``apt-get install dataset-fashion-mnist``).

Under a root ``R`` a data set is looked for in ``R/<name>`` (and the other folder names of
its :attr:`~minicnn.data.registry.DatasetSpec.dirnames`, e.g. torchvision's
``R/MNIST/raw``), and -- for the folders a user names (1 and 2) -- in ``R`` itself. Each
file may be stored gzip-compressed (``name.gz``) or not. MNIST and Fashion-MNIST use the
same file names, so a folder given as the data set's own folder is trusted to hold that
data set; the cheap checksum of the label files on load catches a mix-up.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from .registry import DatasetSpec

ENV_DATA_DIR = "MINICNN_DATA_DIR"
ENV_CACHE_DIR = "MINICNN_CACHE_DIR"
ENV_OFFLINE = "MINICNN_OFFLINE"
SYSTEM_DATA_DIR = Path("/usr/share/datasets")


def cache_dir() -> Path:
    """The folder downloads go to: ``$MINICNN_CACHE_DIR``, else ``$XDG_CACHE_HOME/minicnn``,
    else ``~/.cache/minicnn`` (not created here)."""
    explicit = os.environ.get(ENV_CACHE_DIR)
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "minicnn"


def offline() -> bool:
    """True when ``MINICNN_OFFLINE`` is set to 1/true/yes/on: never touch the network."""
    return os.environ.get(ENV_OFFLINE, "").strip().lower() in ("1", "true", "yes", "on")


@dataclass(frozen=True)
class SearchRoot:
    """One place data sets are searched under.

    Attributes
    ----------
    path : Path
    origin : str
        Why it is searched, e.g. ``"data_dir argument"``, ``"$MINICNN_DATA_DIR"``.
    flat : bool
        Whether files directly in ``path`` count (only for folders a user names).
    """

    path: Path
    origin: str
    flat: bool


def search_roots(data_dir: str | os.PathLike | None = None) -> list[SearchRoot]:
    """The roots searched, in order (see the module docstring)."""
    roots = []
    if data_dir is not None and str(data_dir) != "":
        roots.append(SearchRoot(Path(data_dir).expanduser(), "data_dir argument / --data-dir",
                                True))
    for part in os.environ.get(ENV_DATA_DIR, "").split(os.pathsep):
        if part.strip():
            roots.append(SearchRoot(Path(part.strip()).expanduser(), f"${ENV_DATA_DIR}", True))
    roots.append(SearchRoot(cache_dir(), "user cache", False))
    roots.append(SearchRoot(SYSTEM_DATA_DIR, "system data sets (Debian)", False))
    return roots


def candidate_dirs(spec: DatasetSpec,
                   data_dir: str | os.PathLike | None = None) -> list[tuple[Path, str]]:
    """Every folder that may hold ``spec``'s files, in search order, as ``(folder, origin)``."""
    out: list[tuple[Path, str]] = []
    seen: set[Path] = set()

    def add(path: Path, origin: str):
        key = Path(os.path.abspath(path))
        if key not in seen:
            seen.add(key)
            out.append((path, origin))

    for root in search_roots(data_dir):
        folders = [root.path / d for d in spec.dirnames or (spec.name,)]
        if root.flat:
            folders.append(root.path)
        for folder in folders:
            add(folder, root.origin)
            if spec.subdir:
                add(folder / spec.subdir, root.origin)
    return out


def find_file(directory: Path, filename: str) -> Path | None:
    """``directory/filename`` or ``directory/filename.gz``, whichever exists (that order)."""
    for name in (filename, filename + ".gz"):
        p = directory / name
        if p.is_file():
            return p
    return None


@dataclass
class Location:
    """The outcome of a search for one split's files.

    Attributes
    ----------
    paths : list of Path or None
        The files, in the order of ``spec.splits[split]``; ``None`` when not found.
    directory : Path or None
        The folder they are in.
    origin : str or None
        Which search root it came from.
    searched : list of str
        One line per folder looked at before (and including) the hit: folder, origin and
        what was there -- the body of a not-found message.
    """

    paths: list[Path] | None = None
    directory: Path | None = None
    origin: str | None = None
    searched: list[str] = field(default_factory=list)

    @property
    def found(self) -> bool:
        return self.paths is not None


def locate_split(spec: DatasetSpec, split: str,
                 data_dir: str | os.PathLike | None = None) -> Location:
    """Search the candidate folders for every file of ``split``; never downloads."""
    names = spec.splits[split]
    loc = Location()
    for folder, origin in candidate_dirs(spec, data_dir):
        hits = [find_file(folder, n) for n in names]
        if all(hits):
            loc.paths, loc.directory, loc.origin = hits, folder, origin
            loc.searched.append(f"{folder}  ({origin}): found")
            return loc
        if not folder.is_dir():
            state = "no such folder"
        elif any(hits):
            state = "has only " + ", ".join(h.name for h in hits if h)
        else:
            state = "none of the files"
        loc.searched.append(f"{folder}  ({origin}): {state}")
    return loc
