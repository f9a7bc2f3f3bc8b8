#!/usr/bin/env bash
# Regenerate netspec/caffe/caffe_pb2.py with the pinned protoc (see gen_caffe_proto.py).
set -euo pipefail
cd "$(dirname "$0")/.."
exec python scripts/gen_caffe_proto.py "$@"
