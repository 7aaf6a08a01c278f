"""Run minicnn's benchmark harness from a script: the same options as ``minicnn bench``.

    python benchmarks/run.py --suite conv --backends reference,im2col,numba,torch \\
        --json conv.json --markdown conv.md --plot conv.png
    python benchmarks/run.py --suite models --batch-size 64 --processes 5 --json models.json
    python benchmarks/run.py --suite epoch --processes 3 --json epoch.json

See benchmarks/README.md for the suites, the full measurement and what every column means.
"""

from __future__ import annotations

import sys

from minicnn.bench import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:], prog="benchmarks/run.py"))
