"""netspec: Caffe-style declarative training runner (network + solver YAML, NumPy/CuPy engine).

From Python: ``netspec.load(model, weights)`` gives a ``Model`` to run (``netspec/model.py``),
``netspec.solver(solver_file)`` a ``Training`` to step (``netspec/training.py``),
``netspec.predict(model, weights, images)`` the top classes of images (``netspec/prediction.py``);
``import netspec.pycaffe as caffe`` runs pycaffe scripts.

These names are resolved on first use (PEP 562), from the table ``PUBLIC`` below: importing the
engine here would add about a second to every ``netspec`` command, which imports only what the
command needs (``netspec/cli.py`` does the same for its commands).
"""

import importlib

__version__ = "0.1.0"

#: public name -> the module that defines it
PUBLIC = {"load": "netspec.model", "Model": "netspec.model",
          "solver": "netspec.training", "Training": "netspec.training",
          "predict": "netspec.prediction", "Prediction": "netspec.prediction",
          "export_onnx": "netspec.onnx_export.export"}

__all__ = [*PUBLIC, "__version__"]


def __getattr__(name: str):
    if name in PUBLIC:
        value = getattr(importlib.import_module(PUBLIC[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'netspec' has no attribute {name!r}")


def __dir__():
    return sorted([*globals(), *PUBLIC])
