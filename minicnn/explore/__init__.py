"""``minicnn explore``: a local page where you draw a digit and watch every layer respond.

The page (``static/``: plain HTML, JavaScript and CSS, nothing loaded from elsewhere) sends
the drawing to a small server on this machine; the server prepares it exactly as
``minicnn predict`` does and runs it through the trained network with minicnn's own layers:
forward for every layer's output and the probabilities, ``backward`` for the saliency, im2col
for the inside of a convolution.

For a detection run the page shows the boxes ``minicnn detect`` finds (the same function
finds them), every layer, and the saliency of a box's score.

Modules: :mod:`.analysis` (the computation), :mod:`.detection` (the same for a detection run),
:mod:`.geometry` (receptive fields), :mod:`.encode` (arrays as JSON), :mod:`.payloads` (the
page's answers), :mod:`.runs` (a run folder's explorer, chosen by its task), :mod:`.server`
(HTTP).
"""

from __future__ import annotations

import argparse

from .analysis import Explorer, ExploreError
from .runs import open_run
from .server import ExploreServer, serve, start_in_thread


def port_number(text: str) -> int:
    """An argparse ``type``: a TCP port, 0..65535 (0: the system picks a free one)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a port number, got {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"a port is 0..65535, got {value}")
    return value


__all__ = ["ExploreError", "ExploreServer", "Explorer", "open_run", "port_number", "serve",
           "start_in_thread"]
