"""The data sets minicnn knows by name: their files, classes, statistics, checksums, mirrors.

Checksums
---------
Two kinds are recorded, and a file is verified with whichever is known:

``RemoteFile.content_sha256``
    SHA-256 of the *uncompressed* file. Known for MNIST and Fashion-MNIST (from the
    project's data notes, checked against the files there). Compression-independent: a
    mirror or a distribution (Debian) that recompresses the ``.gz`` still verifies.
``RemoteFile.sha256``
    SHA-256 of the file exactly as the publisher serves it. Recorded for KMNIST and CIFAR-10,
    whose uncompressed checksums we do not know. These values are *not* from the
    publishers (who give MD5 at most) and could not be checked here (no network): they are
    the ones in TensorFlow Datasets' ``url_checksums`` (``kmnist.txt``, ``cifar10.txt``),
    which several independent projects quote as observed. If a publisher ever re-packs a
    file, the download fails loudly with a checksum error instead of loading wrong data.

On top of either checksum every file's *structure* is checked (IDX header, dimensions,
payload size; CIFAR record size and count), on download and on every load. Hashing a large
local file on every load would be slow, so local files are hashed only by
:func:`minicnn.data.verify_dataset` -- except small files (the label files), which are.

Statistics
----------
``mean`` and ``std`` are per channel, over every pixel of the training split, in [0, 1]
units. MNIST, Fashion-MNIST and the synthetic set were measured on the files; KMNIST and
CIFAR-10 are the widely quoted values (not re-measured here).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .errors import UnknownDatasetError
from .synthetic import SYNTHETIC_CLASSES


@dataclass(frozen=True)
class RemoteFile:
    """One file to download.

    Attributes
    ----------
    filename : str
        Name on the mirrors and in the cache, e.g. ``"train-images-idx3-ubyte.gz"``; the
        URL is ``mirror + filename``.
    sha256 : str or None
        SHA-256 of the file as served (``None``: not known).
    content_sha256 : str or None
        SHA-256 after gunzip (``None``: not known, or not a gzip file).
    size : int or None
        Size in bytes as served, when known (checked against the download).
    members : tuple of str
        For an archive (``.tar.gz``): the member paths to extract; empty otherwise.
    """

    filename: str
    sha256: str | None = None
    content_sha256: str | None = None
    size: int | None = None
    members: tuple[str, ...] = ()


@dataclass(frozen=True)
class DatasetSpec:
    """Everything minicnn knows about one data set.

    Attributes
    ----------
    name : str
        Registry key, e.g. ``"fashion-mnist"``.
    title : str
        Human-readable name.
    format : {"idx", "cifar10", "synthetic", "scenes"}
    image_shape : (C, H, W)
    classes : tuple of str
    mean, std : tuple of float, one per channel, [0, 1] units
    splits : dict split -> tuple of file names
        IDX: ``(images_file, labels_file)`` (uncompressed names; ``.gz`` is also accepted).
        CIFAR-10: the batch files.
    num_samples : dict split -> int
        Expected number of samples; files with another count are rejected.
    remote : tuple of RemoteFile
        What to download.
    mirrors : tuple of str
        Base URLs, tried in turn.
    dirnames : tuple of str
        Sub-folder names looked for under each search root (first is the cache folder).
    subdir : str
        Extra sub-folder the files may sit in (``"cifar-10-batches-bin"``).
    homepage, license : str
    default_sizes : dict split -> int
        Only for generated data sets: how many samples to make.
    task : {"classification", "detection"}
        What the data set's targets are: one class per image, or boxes and classes.
    base : str
        Only for scenes: the registered data set whose images they are made from (each split
        from the same split of ``base``).
    """

    name: str
    title: str
    format: str
    image_shape: tuple[int, int, int]
    classes: tuple[str, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    splits: dict[str, tuple[str, ...]] = field(default_factory=dict)
    num_samples: dict[str, int] = field(default_factory=dict)
    remote: tuple[RemoteFile, ...] = ()
    mirrors: tuple[str, ...] = ()
    dirnames: tuple[str, ...] = ()
    subdir: str = ""
    homepage: str = ""
    license: str = ""
    default_sizes: dict[str, int] = field(default_factory=dict)
    task: str = "classification"
    base: str = ""

    @property
    def needs_files(self) -> bool:
        return self.format not in ("synthetic", "scenes")

    def remote_for(self, filename: str) -> RemoteFile | None:
        """The RemoteFile that provides ``filename`` (an uncompressed or member name)."""
        for rf in self.remote:
            if rf.members:
                if any(m.rsplit("/", 1)[-1] == filename for m in rf.members):
                    return rf
            elif rf.filename in (filename, filename + ".gz"):
                return rf
        return None


def _idx_remote(checksums: dict[str, tuple[str | None, str | None, int | None]]):
    return tuple(RemoteFile(filename=f + ".gz", sha256=gz, content_sha256=raw, size=size)
                 for f, (gz, raw, size) in checksums.items())


_IDX_SPLITS = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
               "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}
_IDX_COUNTS = {"train": 60_000, "test": 10_000}

MNIST = DatasetSpec(
    name="mnist", title="MNIST handwritten digits", format="idx", image_shape=(1, 28, 28),
    classes=tuple(str(i) for i in range(10)),
    mean=(0.1307,), std=(0.3081,),                       # measured: 0.130660, 0.308108
    splits=_IDX_SPLITS, num_samples=_IDX_COUNTS,
    remote=_idx_remote({
        # (sha256 of the .gz as served: unknown, sha256 uncompressed, size of .gz: unknown)
        "train-images-idx3-ubyte":
            (None, "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db", None),
        "train-labels-idx1-ubyte":
            (None, "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5", None),
        "t10k-images-idx3-ubyte":
            (None, "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7", None),
        "t10k-labels-idx1-ubyte":
            (None, "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2", None),
    }),
    mirrors=("https://ossci-datasets.s3.amazonaws.com/mnist/",
             "https://storage.googleapis.com/cvdf-datasets/mnist/",
             "http://yann.lecun.com/exdb/mnist/"),
    dirnames=("mnist", "MNIST", "MNIST/raw"),
    homepage="http://yann.lecun.com/exdb/mnist/", license="CC BY-SA 3.0",
)

FASHION_MNIST = DatasetSpec(
    name="fashion-mnist", title="Fashion-MNIST (Zalando article images)", format="idx",
    image_shape=(1, 28, 28),
    classes=("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
             "Sneaker", "Bag", "Ankle boot"),
    mean=(0.2860,), std=(0.3530,),                       # measured: 0.286041, 0.353024
    splits=_IDX_SPLITS, num_samples=_IDX_COUNTS,
    remote=_idx_remote({
        "train-images-idx3-ubyte":
            (None, "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888", None),
        "train-labels-idx1-ubyte":
            (None, "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9", None),
        "t10k-images-idx3-ubyte":
            (None, "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b", None),
        "t10k-labels-idx1-ubyte":
            (None, "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34", None),
    }),
    mirrors=("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
             "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/"),
    dirnames=("fashion-mnist", "fashion_mnist", "FashionMNIST", "FashionMNIST/raw"),
    homepage="https://github.com/zalandoresearch/fashion-mnist", license="MIT",
)

KMNIST = DatasetSpec(
    name="kmnist", title="Kuzushiji-MNIST (cursive Japanese hiragana)", format="idx",
    image_shape=(1, 28, 28),
    classes=("o", "ki", "su", "tsu", "na", "ha", "ma", "ya", "re", "wo"),
    mean=(0.1918,), std=(0.3483,),                       # widely quoted, not re-measured
    splits=_IDX_SPLITS, num_samples=_IDX_COUNTS,
    # The uncompressed SHA-256 of KMNIST is not known to us, so no content checksum.
    # The .gz checksums and sizes below are TensorFlow Datasets' (url_checksums/kmnist.txt),
    # not published by CODH and not verified here; see the module docstring.
    remote=_idx_remote({
        "train-images-idx3-ubyte":
            ("51467d22d8cc72929e2a028a0428f2086b092bb31cfb79c69cc0a90ce135fde4", None, 18165135),
        "train-labels-idx1-ubyte":
            ("e38f9ebcd0f3ebcdec7fc8eabdcdaef93bb0df8ea12bee65224341c8183d8e17", None, 29497),
        "t10k-images-idx3-ubyte":
            ("edd7a857845ad6bb1d0ba43fe7e794d164fe2dce499a1694695a792adfac43c5", None, 3041136),
        "t10k-labels-idx1-ubyte":
            ("20bb9a0ef54c7db3efc55a92eef5582c109615df22683c380526788f98e42a1c", None, 5120),
    }),
    mirrors=("https://codh.rois.ac.jp/kmnist/dataset/kmnist/",
             "http://codh.rois.ac.jp/kmnist/dataset/kmnist/"),
    dirnames=("kmnist", "KMNIST", "KMNIST/raw"),
    homepage="https://github.com/rois-codh/kmnist", license="CC BY-SA 4.0",
)

_CIFAR_TRAIN = tuple(f"data_batch_{i}.bin" for i in range(1, 6))
CIFAR10 = DatasetSpec(
    name="cifar10", title="CIFAR-10 (32x32 colour photos)", format="cifar10",
    image_shape=(3, 32, 32),
    classes=("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
             "truck"),
    mean=(0.4914, 0.4822, 0.4465), std=(0.2470, 0.2435, 0.2616),   # widely quoted
    splits={"train": _CIFAR_TRAIN, "test": ("test_batch.bin",)},
    num_samples={"train": 50_000, "test": 10_000},
    # SHA-256 and size of the archive: TensorFlow Datasets' url_checksums/cifar10.txt (the
    # publisher lists only an MD5); not verified here, see the module docstring. No checksums
    # of the extracted .bin files are known to us: they are checked for structure (size,
    # record count, labels) and trusted because they came out of a verified archive.
    remote=(RemoteFile(
        filename="cifar-10-binary.tar.gz",
        sha256="c4a38c50a1bc5f3a1c5537f2155ab9d68f9f25eb1ed8d9ddda3db29a59bca1dd",
        size=170052171,
        members=tuple(f"cifar-10-batches-bin/{f}"
                      for f in (*_CIFAR_TRAIN, "test_batch.bin", "batches.meta.txt"))),),
    mirrors=("https://www.cs.toronto.edu/~kriz/",),
    dirnames=("cifar10", "cifar-10", "CIFAR10"),
    subdir="cifar-10-batches-bin",
    homepage="https://www.cs.toronto.edu/~kriz/cifar.html", license="no licence stated",
)

SYNTHETIC = DatasetSpec(
    name="synthetic", title="Synthetic shapes (generated, no files)", format="synthetic",
    image_shape=(1, 28, 28), classes=SYNTHETIC_CLASSES,
    mean=(0.1306,), std=(0.2549,),                       # measured on the seed-0 train split
    num_samples={"train": 6000, "test": 1000}, default_sizes={"train": 6000, "test": 1000},
)

# Scenes: 96x96 canvases of 1-4 objects resized to 20-40 pixels (minicnn.data.scenes).
_SCENE_SIZES = {"train": 12_000, "test": 2_000}

MNIST_SCENES = DatasetSpec(
    name="mnist-scenes", title="MNIST scenes: 1-4 digits per 96x96 canvas, with boxes (generated)",
    format="scenes", image_shape=(1, 96, 96), classes=MNIST.classes,
    mean=(0.0638,), std=(0.2141,),                       # measured on the seed-0 train split
    num_samples=_SCENE_SIZES, default_sizes=_SCENE_SIZES, task="detection", base="mnist",
    homepage=MNIST.homepage, license=MNIST.license,
)

FASHION_MNIST_SCENES = DatasetSpec(
    name="fashion-mnist-scenes",
    title="Fashion-MNIST scenes: 1-4 articles per 96x96 canvas, with boxes (generated)",
    format="scenes", image_shape=(1, 96, 96), classes=FASHION_MNIST.classes,
    mean=(0.0727,), std=(0.2117,),                       # measured on the seed-0 train split
    num_samples=_SCENE_SIZES, default_sizes=_SCENE_SIZES, task="detection",
    base="fashion-mnist", homepage=FASHION_MNIST.homepage, license=FASHION_MNIST.license,
)

#: Registered data sets by name. Add your own with :func:`register_dataset`.
REGISTRY: dict[str, DatasetSpec] = {
    spec.name: spec for spec in (MNIST, FASHION_MNIST, KMNIST, CIFAR10, SYNTHETIC,
                                 MNIST_SCENES, FASHION_MNIST_SCENES)}

_ALIASES = {"fashion_mnist": "fashion-mnist", "fashionmnist": "fashion-mnist",
            "cifar-10": "cifar10", "cifar_10": "cifar10"}

SPLITS = ("train", "test")


def dataset_names() -> list[str]:
    """Names of all registered data sets."""
    return list(REGISTRY)


def get_spec(name: str) -> DatasetSpec:
    """The :class:`DatasetSpec` registered under ``name`` (case-insensitive; ``fashion_mnist``
    and ``cifar-10`` are accepted too).

    Raises
    ------
    UnknownDatasetError
        Listing the valid names.
    """
    key = str(name).strip().lower()
    key = _ALIASES.get(key, key)
    if key not in REGISTRY:
        raise UnknownDatasetError(f"unknown data set {name!r}; known data sets: "
                                  f"{', '.join(REGISTRY)}")
    return REGISTRY[key]


def register_dataset(spec: DatasetSpec, overwrite: bool = False) -> DatasetSpec:
    """Add a data set (e.g. another IDX set such as EMNIST) to the registry."""
    if spec.name in REGISTRY and not overwrite:
        raise ValueError(f"data set {spec.name!r} is already registered "
                         f"(pass overwrite=True to replace it)")
    REGISTRY[spec.name] = spec
    return spec
