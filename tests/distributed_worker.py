"""Run under ``mpiexec`` by tests/test_distributed.py: train each job of a JSON list as one rank
of a data-parallel run and save this rank's final weights (the flat parameter buffer).

A job: {"solver": path, "sets": [...], "out": path stem, "snapshot": state to resume or null}.
Each rank writes ``<out>.rank<r>.npy``; one launch runs many jobs (a launch costs ~1 s).
"""

from __future__ import annotations

import json
import sys

import numpy as np

from netspec.backend import to_numpy
from netspec.workflows import train


def main(jobs_file: str) -> None:
    with open(jobs_file) as f:
        jobs = json.load(f)
    for job in jobs:
        outcome = train(job["solver"], job["sets"], snapshot=job.get("snapshot"),
                        dtype="float64", quiet=True, distributed_run=True)
        rank = outcome.solver.group.rank
        np.save(f"{job['out']}.rank{rank}.npy", to_numpy(outcome.solver.flat_data))


if __name__ == "__main__":
    main(sys.argv[1])
