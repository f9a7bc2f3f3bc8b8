"""Run every ```python block of docs/python.md, in order, in one namespace, from the
repository root, with runs/python replaced by a temporary folder."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "python.md"


def blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)


def test_the_page_shows_each_interface():
    text = "".join(blocks())
    for name in ("netspec.load", "netspec.solver", "import netspec.pycaffe", "backward",
                 "SGDSolver", "Transformer"):
        assert name in text


def test_every_python_block_runs(tmp_path, monkeypatch):
    pytest.importorskip("google.protobuf", reason=".prototxt files need protobuf")
    pytest.importorskip("PIL", reason="caffe.io.load_image needs Pillow")
    monkeypatch.chdir(ROOT)
    out = tmp_path / "python"
    out.mkdir()
    namespace: dict = {}
    for code in blocks():
        exec(compile(code.replace("runs/python", str(out)), str(DOC), "exec"), namespace)  # noqa: S102
