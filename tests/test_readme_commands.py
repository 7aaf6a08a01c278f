"""CI runs the README's two set-up commands as the README prints them (``.ci/run`` takes them
from the README through ``.ci/readme_commands.py``): the README must keep exactly two, one
that trains and one that runs these tests, and the extraction must read them right."""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _extractor():
    spec = importlib.util.spec_from_file_location("readme_commands",
                                                  ROOT / ".ci" / "readme_commands.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.setup_commands


def test_the_readme_prints_the_two_commands_ci_runs():
    commands = _extractor()((ROOT / "README.md").read_text(encoding="utf-8"))
    assert len(commands) == 2, commands
    train, tests = commands
    assert train.startswith("pip install -e .") and "minicnn train" in train
    assert "pytest" in tests and "MINICNN_DATA_DIR=../shared/data" in tests


def test_the_extraction_reads_only_the_set_up_section():
    readme = "\n".join([
        "# x", "```bash", "not this", "```",
        "## Set-up: two commands", "text", "```bash", "first \\", "  --flag", "```",
        "```python", "print()", "```", "```bash", "second", "```",
        "## Quick start", "```bash", "not this either", "```"])
    assert _extractor()(readme) == ["first --flag", "second"]
