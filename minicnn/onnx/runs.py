"""Run folders to and from ONNX: ``minicnn export RUN OUT.onnx`` and
``minicnn import MODEL.onnx --out RUN --dataset NAME``.

An imported run is an ordinary run folder (``config.json``, ``meta.json``, ``model.npz``), so
``evaluate``, ``predict``, ``detect`` and ``explore`` open it through
:func:`minicnn.runfolder.load_run` unchanged. That is why an import accepts only graphs that
*are* one of :data:`minicnn.models.MODELS` (the same layers, in the same order, with the same
settings, for the data set's channels, size and classes): a run folder rebuilds its
architecture from the model's name (:func:`minicnn.runfolder.build_model`), and a name is
what ``config.json`` can hold. Any other graph still loads in Python
(:func:`minicnn.onnx.load`); the refusal says so. The ``.onnx`` file is kept beside the
weights as ``model.onnx`` and ``imported.json`` records where it came from, so that an
imported run can be told from a trained one (it has no ``history.json``). Its
``checkpoint.npz`` is taken before the first epoch, so ``minicnn train --out RUN --resume
--epochs N`` fine-tunes the imported weights with ``minicnn train``'s recipe (``config.json``).
"""

from __future__ import annotations

import hashlib
import math
from pathlib import Path

from ..argtypes import UserError


def export_run(run, out, data_dir=None) -> Path:
    """Write the trained model of run folder ``run`` to ``out`` (.onnx), with the run's
    normalisation, class names, model and data set names in its metadata."""
    from ..runfolder import load_run
    from . import export

    _, model, meta = load_run(run, data_dir=data_dir)
    model.eval()
    return export(model, out, meta.input_shape, meta=meta)


def _signature(model) -> list[tuple]:
    """Per leaf layer: its dotted name and what it computes; plus every state-dict shape."""
    from .from_onnx import _signature as layer_signature

    layers = [(name, layer_signature(layer)) for name, layer in model.named_modules()
              if not layer._modules]
    return layers + [(key, value.shape) for key, value in model.state_dict().items()]


def match_model(model, input_shape, num_classes: int, task: str, only: str | None = None):
    """The name in :data:`minicnn.models.MODELS` whose network is ``model``'s architecture
    (for ``input_shape`` and ``num_classes``), or raise :class:`UserError` saying why none is.
    """
    from .. import models

    names = [only] if only else [n for n in models.MODELS if models.task_of(n) == task]
    ours = _signature(model)
    channels, height = input_shape[0], input_shape[1]
    differences = []
    for name in names:
        try:
            candidate = models.build(name, channels, num_classes, image_size=height, rng=0)
        except ValueError as error:
            differences.append(f"{name}: {error}")
            continue
        theirs = _signature(candidate)
        if theirs == ours:
            return name
        first = next((f"{a} vs {b}" for a, b in zip(ours, theirs) if a != b),
                     f"{len(ours)} vs {len(theirs)} entries")
        differences.append(f"{name}: {first}")
    raise UserError(
        f"the graph is none of minicnn's {task} models for input {list(input_shape)} and "
        f"{num_classes} classes, so no run folder can rebuild it (minicnn.onnx.load still "
        f"opens it in Python); closest differences: {'; '.join(differences)}")


def import_run(onnx_path, out, dataset: str, model_name: str | None = None) -> dict:
    """Make run folder ``out`` from ``onnx_path`` for data set ``dataset``.

    Returns
    -------
    dict
        ``model`` (the matched name), ``out`` and ``source``.

    Raises
    ------
    UserError
        When ``out`` holds a run, the graph's input is not the data set's image shape, it is
        none of the data set's task's models for its classes, or its metadata's mean and std
        are unusable.
    minicnn.onnx.OnnxImportError
        When the file cannot be read (one line naming the node).
    """
    from .. import models
    from ..config import recipe_config
    from ..data import get_spec
    from ..runfolder import RunMeta
    from ..serialize import atomic_write, save, write_json, write_text
    from ..train import initial_checkpoint
    from . import read

    out, onnx_path = Path(out), Path(onnx_path)
    if any((out / name).exists() for name in ("config.json", "model.npz", "checkpoint.npz")):
        raise UserError(f"{out} already holds a run; choose another --out")
    try:
        spec = get_spec(dataset)
    except KeyError as error:       # UnknownDatasetError: its message lists the names
        raise UserError(str(error.args[0])) from None
    imported = read(onnx_path)
    input_shape = tuple(spec.image_shape)
    if imported.input_shape != input_shape:
        raise UserError(f"{onnx_path} takes input {list(imported.input_shape)} but data set "
                        f"{spec.name!r} has images of shape {list(input_shape)}")
    name = match_model(imported.model, input_shape, len(spec.classes), spec.task, model_name)
    model = models.build(name, input_shape[0], len(spec.classes), image_size=input_shape[1])
    model.load_state_dict(imported.model.state_dict())
    metadata = imported.metadata
    # The file's own statistics win (a minicnn export carries them); else the data set's.
    mean = metadata.get("minicnn.mean", list(spec.mean))
    std = metadata.get("minicnn.std", list(spec.std))
    if not all(_per_channel(values, input_shape[0]) for values in (mean, std)) \
            or min(std) <= 0:
        raise UserError(f"{onnx_path}: its metadata's minicnn.mean {mean!r} and minicnn.std "
                        f"{std!r} must be {input_shape[0]} finite number(s) each, std > 0")
    # The settings `minicnn train` would use, for one epoch: what `train --resume` runs.
    config = recipe_config(model=name, dataset=spec.name, epochs=1)
    try:
        config.check()
    except ValueError as error:
        raise UserError(str(error)) from None
    meta = RunMeta(input_shape=input_shape, mean=[float(v) for v in mean],
                   std=[float(v) for v in std], classes=[str(c) for c in spec.classes],
                   model=name, dataset=spec.name)
    data = onnx_path.read_bytes()
    atomic_write(out / "model.onnx", lambda handle: handle.write(data))
    write_json(out / "imported.json", {"format": 1, "source": str(onnx_path.resolve()),
                                       "sha256": hashlib.sha256(data).hexdigest(),
                                       "model": name})
    write_json(out / "meta.json", meta.to_dict())
    save(model, out / "model.npz")
    save(initial_checkpoint(config, model), out / "checkpoint.npz")
    # config.json last: a run folder is one once it exists, so a failure above leaves none.
    write_text(out / "config.json", config.to_json() + "\n")
    return {"model": name, "out": out, "source": onnx_path}


def _per_channel(values, channels: int) -> bool:
    return (isinstance(values, list) and len(values) == channels
            and all(isinstance(v, (int, float)) and not isinstance(v, bool)
                    and math.isfinite(v) for v in values))


__all__ = ["export_run", "import_run", "match_model"]
