"""pycaffe's ``caffe.proto``: ``from netspec.pycaffe.proto import caffe_pb2`` gives Caffe's
messages (``SolverParameter``, ``NetParameter``, ``BlobProto`` …) from netspec's schema
(``netspec/caffe/caffe.proto``: BVLC's fields and the forks'), as scripts that write solver
files with ``caffe_pb2.SolverParameter`` expect. Needs protobuf (the ``caffe`` extra)."""
