"""docs/architecture.md stays true: every module path it names exists."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "architecture.md"


def named_paths() -> list[str]:
    return sorted(set(re.findall(r"`((?:netspec|tests|scripts)/[\w./]*)`", DOC.read_text())))


def test_the_doc_names_modules():
    assert len(named_paths()) > 40


def test_every_named_path_exists():
    missing = [p for p in named_paths()
               if not (ROOT / p).exists() and not p.startswith("tests/test_layers_<")]
    assert missing == []
