"""The file format: pydantic models of net and solver files and their loaders."""

from .load import load_net, load_solver, loads_net, parse_net, resolve_solver_paths
from .net import LayerParameter, NetParameter
from .params import LAYER_PARAM_BLOCKS, FillerParameter, ParamSpec
from .solver import SolverParameter

__all__ = ["load_net", "load_solver", "loads_net", "parse_net", "resolve_solver_paths",
           "LayerParameter", "NetParameter", "LAYER_PARAM_BLOCKS", "FillerParameter",
           "ParamSpec", "SolverParameter"]
