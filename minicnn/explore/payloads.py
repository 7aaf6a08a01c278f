"""The JSON answers to ``POST /api/analyse``: what the page draws for one analysed image.

Each explorer picks its answer (:meth:`minicnn.explore.analysis.Explorer.payload`): the class
probabilities for a classifier, the boxes for a detector. Arrays are sent as
:mod:`.encode` payloads.
"""

from __future__ import annotations

import numpy as np

from . import encode


def steps_payload(analysis) -> list[dict]:
    """The preprocessing steps as pictures, the normalised network input last."""
    steps = [{"name": name, **encode.picture(encode.thumbnail(image))}
             for name, image in analysis.steps]
    steps.append({"name": "normalised: (x - mean) / std",
                  **encode.picture(_hwc(analysis.network_input[0]))})
    return steps


def layers_payload(explorer, analysis) -> list[dict]:
    """Every layer's output: feature maps as pictures, vectors as exact values."""
    layers = []
    for name, layer, output in zip(explorer.layer_names, explorer.layers, analysis.outputs):
        entry = {"name": name, "kind": type(layer).__name__, "shape": list(output.shape)}
        if output.ndim == 3:
            entry["maps"] = encode.picture(output)
        else:
            entry["values"] = encode.exact(output)
        layers.append(entry)
    return layers


def analysis_payload(explorer, analysis, gradient: np.ndarray,
                     predicted: int) -> dict:
    """The answer to ``POST /api/analyse``."""
    steps, layers = steps_payload(analysis), layers_payload(explorer, analysis)
    return {"id": analysis.id, "inverted": analysis.inverted, "predicted": predicted,
            "probabilities": [float(p) for p in analysis.probabilities],
            "steps": steps, "layers": layers,
            "saliency": {"class": predicted, **encode.exact(gradient)}}


def detection_payload(explorer, analysis, found, scale: float,
                      gradient: np.ndarray, top) -> dict:
    """The answer to ``POST /api/analyse`` for a detection run.

    ``boxes`` are ``minicnn detect --json``'s (label, score, box in the picture's pixels), each
    with ``class`` and ``input_box``: the same box on the network's input canvas. ``picture``
    is the picture as the detector saw it (gray, light on black; shrunk for showing) and
    ``picture_size`` its own ``[height, width]``, the pixels the boxes are in.
    """
    steps, layers = steps_payload(analysis), layers_payload(explorer, analysis)
    boxes = [{**shown, "class": int(k), "input_box": [float(v) * scale for v in box]}
             for shown, k, box in zip(found.to_json(), found.classes, found.boxes)]
    return {"id": analysis.id, "task": "detection", "inverted": analysis.inverted,
            "boxes": boxes, "scale": scale, "picture_size": list(found.image.shape),
            "picture": encode.picture(encode.thumbnail(found.image, 288)),
            "cell_scores": encode.exact(analysis.probabilities),
            "steps": steps, "layers": layers,
            "saliency": {"box": top, **encode.exact(gradient)}}


def _hwc(chw: np.ndarray) -> np.ndarray:
    """(C, H, W) to what a picture of it shows: (H, W) for one channel, (H, W, 3) for three."""
    return chw[0] if chw.shape[0] == 1 else chw.transpose(1, 2, 0)
