"""netspec: Caffe-style declarative training runner (network + solver YAML, NumPy/CuPy engine)."""

__version__ = "0.1.0"
