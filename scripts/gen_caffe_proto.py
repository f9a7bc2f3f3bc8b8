#!/usr/bin/env python
"""Regenerate netspec/caffe/caffe_pb2.py from netspec/caffe/caffe.proto, reproducibly.

    pip install 'grpcio-tools==1.62.3'      # protoc 25.1; pulls protobuf 4.25.x
    python scripts/gen_caffe_proto.py       # rewrites netspec/caffe/caffe_pb2.py
    python scripts/gen_caffe_proto.py --out DIR   # writes DIR/netspec/caffe/caffe_pb2.py

The generator is pinned because protoc's output differs between versions. 1.62.3 (protoc 25.1)
is the newest whose Python output carries no runtime-version check, so the generated module
imports under every protobuf runtime from 4.21 on (the `caffe` extra asks for protobuf>=4).
tests/test_caffe_port.py regenerates into a temporary folder and compares with the committed
file.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

GRPCIO_TOOLS_VERSION = "1.62.3"
ROOT = Path(__file__).resolve().parent.parent
PROTO = "netspec/caffe/caffe.proto"


def installed_version() -> str | None:
    try:
        from importlib.metadata import PackageNotFoundError, version  # noqa: PLC0415

        return version("grpcio-tools")
    except PackageNotFoundError:
        return None


def generate(out_dir: Path, check_version: bool = True) -> Path:
    """Run the pinned protoc on caffe.proto; return the path of the generated module."""
    have = installed_version()
    if have is None:
        raise SystemExit(f"grpcio-tools is not installed: pip install 'grpcio-tools=={GRPCIO_TOOLS_VERSION}'")
    if check_version and have != GRPCIO_TOOLS_VERSION:
        raise SystemExit(f"grpcio-tools {have} is installed but the generator is pinned to "
                         f"{GRPCIO_TOOLS_VERSION}: pip install 'grpcio-tools=={GRPCIO_TOOLS_VERSION}'")
    from grpc_tools import protoc  # noqa: PLC0415

    out_dir.mkdir(parents=True, exist_ok=True)
    # Paths relative to the repository root keep the descriptor's file name
    # ("netspec/caffe/caffe.proto") independent of where the checkout lives.
    import os  # noqa: PLC0415

    cwd = os.getcwd()
    os.chdir(ROOT)
    try:
        rc = protoc.main(["grpc_tools.protoc", "-I.", f"--python_out={out_dir}", PROTO])
    finally:
        os.chdir(cwd)
    if rc != 0:
        raise SystemExit(f"protoc failed with exit code {rc}")
    return out_dir / "netspec" / "caffe" / "caffe_pb2.py"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=ROOT,
                    help="folder to write netspec/caffe/caffe_pb2.py under (default: the repository)")
    args = ap.parse_args(argv)
    path = generate(args.out.resolve())
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
