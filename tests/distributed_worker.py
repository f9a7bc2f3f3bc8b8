"""Run under ``mpiexec`` by tests/test_distributed.py: train each job of a JSON list as one rank
of a data-parallel run and save this rank's final weights (the flat parameter buffer).

A job: {"solver": path, "sets": [...], "out": path stem, "snapshot": state to resume or null,
"gpu": --gpu's value (optional)}. Each rank writes ``<out>.rank<r>.npy`` (and, on a GPU, how its
gradients travelled in ``<out>.rank<r>.via``); one launch runs many jobs (a launch costs ~1 s).
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
                        gpu=job.get("gpu", False), dtype="float64", quiet=True,
                        distributed_run=True)
        solver = outcome.solver
        rank = solver.group.rank
        np.save(f"{job['out']}.rank{rank}.npy", to_numpy(solver.flat_data))
        if solver.backend.is_gpu:
            with open(f"{job['out']}.rank{rank}.via", "w") as f:
                f.write(solver.gradients_via)


if __name__ == "__main__":
    main(sys.argv[1])
