"""The benchmark's alternation schedule (bench/schedule.py): every framework gets the same number
of timed steps, the order reverses every round, and blocks start with an untimed step."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def alternation():
    with pytest.MonkeyPatch.context() as mp:   # bench/ is a package at the checkout's root
        mp.syspath_prepend(str(ROOT))
        return importlib.import_module("bench.schedule").alternation


def test_alternate_every_step(alternation):
    got = list(alternation(["a", "b"], 3, 1, 0.0))
    assert got == [("a", True), ("b", True), ("b", True), ("a", True), ("a", True), ("b", True)]


@pytest.mark.parametrize("iters, block", [(7, 3), (6, 3), (1, 4), (10, 10)])
def test_blocks(alternation, iters, block):
    got = list(alternation(["a", "b", "c"], iters, block, 0.0))
    for k in "abc":
        assert sum(1 for name, timed in got if name == k and timed) == iters
    runs = []                      # (framework, untimed first?, timed steps) per block
    for name, timed in got:
        if runs and runs[-1][0] == name and timed:
            runs[-1][2] += 1
        else:
            runs.append([name, not timed, int(timed)])
    assert all(first_untimed for _, first_untimed, _ in runs)
    assert [r[0] for r in runs[:6]] == list("abccba")[:len(runs[:6])]
    assert all(n == block for _, _, n in runs[:-3])
