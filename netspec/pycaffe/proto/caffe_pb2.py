"""Caffe's generated messages, ``netspec.caffe.caffe_pb2`` under pycaffe's module path
(``caffe.proto.caffe_pb2``); ``str(message)`` is a ``.prototxt`` netspec reads."""

from ...caffe.caffe_pb2 import *  # noqa: F401,F403
