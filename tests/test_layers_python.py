"""Python layers (netspec/layers/python.py): a layer class in a module beside the net file or in
the working directory, the 'caffe' shim, learnable blobs, losses equal to the built-in ones,
training through the solver, errors with their locations, and the GPU against the CPU.
"""

from __future__ import annotations

import sys
import textwrap

import numpy as np
import pytest
import yaml
from gradcheck import check_gradients, forward_backward_blobs, make_layer, rand
from layer_cases import F32, MEM

from netspec.blob import Blob
from netspec.errors import NetspecError, SpecError
from netspec.layers.python import PythonLayerBase, PythonLayerError
from netspec.net import Net
from netspec.spec import load_net
from netspec.spec.net import LayerParameter


@pytest.fixture
def no_caffe_module(monkeypatch):
    """Run with no 'caffe' module imported; whatever the test installs is removed after."""
    monkeypatch.delitem(sys.modules, "caffe", raising=False)
    yield
    sys.modules.pop("caffe", None)


SCALE_LAYER = '''
import json
import numpy as np
import caffe


class ScaleShift(caffe.Layer):
    """y = w * x + param_str's shift; w is a learnable scalar blob."""

    def setup(self, bottom, top):
        if len(bottom) != 1:
            raise Exception("one bottom")
        self.shift = json.loads(self.param_str)["shift"]
        self.blobs.add_blob(1)
        self.blobs[0].data[...] = 2.0
        self.seen_phase = self.phase

    def reshape(self, bottom, top):
        top[0].reshape(*bottom[0].data.shape)

    def forward(self, bottom, top):
        top[0].data[...] = self.blobs[0].data[0] * bottom[0].data + self.shift

    def backward(self, top, propagate_down, bottom):
        self.blobs[0].diff[0] += (top[0].diff * bottom[0].data).sum()
        if propagate_down[0]:
            bottom[0].diff[...] = self.blobs[0].data[0] * top[0].diff


class EuclideanLossLayer(caffe.Layer):
    """pycaffe's examples/pycaffe/layers/pyloss.py."""

    def setup(self, bottom, top):
        if len(bottom) != 2:
            raise Exception("Need two inputs to compute distance.")

    def reshape(self, bottom, top):
        if bottom[0].count != bottom[1].count:
            raise Exception("Inputs must have the same dimension.")
        self.diff = np.zeros_like(bottom[0].data, dtype=np.float32)
        top[0].reshape(1)

    def forward(self, bottom, top):
        self.diff[...] = bottom[0].data - bottom[1].data
        top[0].data[...] = np.sum(self.diff**2) / bottom[0].num / 2.

    def backward(self, top, propagate_down, bottom):
        for i in range(2):
            if not propagate_down[i]:
                continue
            sign = 1 if i == 0 else -1
            bottom[i].diff[...] = sign * self.diff / bottom[i].num


class Broken(caffe.Layer):
    def reshape(self, bottom, top):
        top[0].reshape(bottom[0].num, bottom[0].channels, bottom[0].height, bottom[0].width)

    def forward(self, bottom, top):
        raise ValueError("boom")


class NoShape(caffe.Layer):
    def forward(self, bottom, top):
        pass


class Grows(caffe.Layer):
    def reshape(self, bottom, top):
        self.n = getattr(self, "n", 0) + 1
        top[0].reshape(self.n)

    def forward(self, bottom, top):
        pass
'''


def _py_net(tmp_path, layers, name="net.yaml"):
    spec = {"name": "py", "layer": [
        {"name": "in", "type": "Input", "top": ["x", "t"],
         "input_param": {"shape": {"dim": [3, 2, 2, 1]}}}] + layers}
    path = tmp_path / name
    path.write_text(yaml.safe_dump(spec))
    return load_net(path)


def _py(name, layer, bottom, top, param_str="", **extra):
    return {"name": name, "type": "Python", "bottom": bottom, "top": top,
            "python_param": {"module": "mylayers_b", "layer": layer, "param_str": param_str},
            **extra}


@pytest.fixture
def py_module(tmp_path, no_caffe_module):
    (tmp_path / "mylayers_b.py").write_text(textwrap.dedent(SCALE_LAYER))
    yield tmp_path
    sys.modules.pop("mylayers_b", None)


def test_python_layer_found_beside_the_net_with_caffe_shim(py_module):
    net_param = _py_net(py_module, [
        _py("s", "ScaleShift", "x", "y", '{"shift": 0.5}', param=[{"lr_mult": 1}]),
        _py("loss", "EuclideanLossLayer", ["y", "t"], "loss", loss_weight=1),
    ])
    net = Net(net_param, "TEST", F32)
    assert sys.modules["caffe"].__netspec_shim__
    s = net.layer_by_name("s")
    assert s.obj.seen_phase == 1 and isinstance(s.obj, PythonLayerBase)
    assert net.blobs["loss"].shape == (1,) and net.blobs["y"].shape == (3, 2, 2, 1)
    x, t = rand((3, 2, 2, 1)), rand((3, 2, 2, 1), 1)
    net.blobs["x"].data[...] = x
    net.blobs["t"].data[...] = t
    net.clear_param_diffs()
    loss = net.forward_backward()
    y = 2 * x + 0.5
    assert loss == pytest.approx(((y - t) ** 2).sum() / 3 / 2, rel=1e-5)
    np.testing.assert_allclose(net.blobs["y"].data, y, rtol=1e-6)
    # gradient reaches the learnable blob; x is an Input, no gradient needed
    assert s.blobs[0].diff[0] == pytest.approx(((y - t) / 3 * x).sum(), rel=1e-5)
    assert [p.shape for p in net.params] == [(1,)]


def test_python_layer_gradients(py_module, monkeypatch):
    monkeypatch.chdir(py_module)
    layer, tops = make_layer(_py("s", "ScaleShift", "x", "y", '{"shift": -1}'), [(2, 3)])
    assert tops == [(2, 3)]
    check_gradients(layer, [rand((2, 3))], tops)


def test_python_loss_layer_equals_builtin(py_module, monkeypatch):
    monkeypatch.chdir(py_module)
    a, b = rand((4, 3)), rand((4, 3), 1)
    py, t1 = make_layer(_py("l", "EuclideanLossLayer", ["a", "b"], "loss"), [a.shape, b.shape])
    builtin, t2 = make_layer({"type": "EuclideanLoss"}, [a.shape, b.shape])
    b1, top1 = forward_backward_blobs(py, [a, b], t1, [np.ones(1)], [True, True])
    b2, top2 = forward_backward_blobs(builtin, [a, b], t2, [1.0])
    assert float(top1[0].data[0]) == pytest.approx(float(top2[0].data), rel=1e-6)
    np.testing.assert_allclose(b1[0].diff, b2[0].diff, rtol=1e-6)
    np.testing.assert_allclose(b1[1].diff, b2[1].diff, rtol=1e-6)


def test_python_layer_in_a_solver_learns_its_blob(py_module):
    from netspec.log import CaffeLog
    from netspec.solvers import Solver
    from netspec.spec.solver import SolverParameter

    net_param = _py_net(py_module, [
        _py("s", "ScaleShift", "x", "y", '{"shift": 0}'),
        {"name": "loss", "type": "EuclideanLoss", "bottom": ["y", "t"], "top": "loss"},
    ])
    sp = SolverParameter.model_validate({"net": "x", "base_lr": 0.5, "max_iter": 30,
                                         "lr_policy": "fixed"})
    solver = Solver(sp, backend=F32, net_param=net_param, log=CaffeLog(quiet=True))
    x = rand((3, 2, 2, 1))
    for _ in range(30):
        solver.net.blobs["x"].data[...] = x
        solver.net.blobs["t"].data[...] = -3 * x
        solver.step_once()
    assert float(solver.net.layer_by_name("s").blobs[0].data[0]) == pytest.approx(-3, abs=1e-3)


def test_python_layer_errors(py_module, tmp_path, monkeypatch):
    monkeypatch.chdir(py_module)
    with pytest.raises(SpecError, match="cannot find Python module 'nowhere'"):
        make_layer({"type": "Python", "bottom": "x", "top": "y",
                    "python_param": {"module": "nowhere", "layer": "X"}}, [(2,)])
    with pytest.raises(SpecError, match="no class 'ScaleShiff'.*ScaleShift"):
        Net(_py_net(py_module, [_py("s", "ScaleShiff", "x", "y")]), "TRAIN", F32)
    with pytest.raises(PythonLayerError, match=r"'b'.*Broken.forward\(\) raised ValueError: boom "
                                               r"\(at .*mylayers_b.py:\d+\)"):
        net = Net(_py_net(py_module, [_py("b", "Broken", "x", "y")]), "TRAIN", F32)
        net.forward()
    with pytest.raises(NetspecError, match="no shape to top"):
        Net(_py_net(py_module, [_py("n", "NoShape", "x", "y")]), "TRAIN", F32)
    net = Net(_py_net(py_module, [_py("g", "Grows", "x", "y")]), "TRAIN", F32)
    with pytest.raises(PythonLayerError, match="fixed shape"):
        net.forward()
    with pytest.raises(PythonLayerError, match="setup\\(\\) raised Exception: one bottom"):
        make_layer(_py("s", "ScaleShift", ["x", "t"], "y", '{"shift": 0}'), [(2,), (2,)])
    (tmp_path / "badimport_b.py").write_text("import numpy\nraise RuntimeError('no luck')\n")
    with pytest.raises(SpecError, match="importing module 'badimport_b' failed: RuntimeError"):
        Net(_py_net(tmp_path, [{**_py("b", "X", "x", "y"),
                                "python_param": {"module": "badimport_b", "layer": "X"}}]),
            "TRAIN", F32)
    with pytest.raises(Exception, match="module"):
        LayerParameter.model_validate({"name": "p", "type": "Python", "python_param": {"layer": "X"}})


def test_python_layer_module_from_working_directory(tmp_path, monkeypatch, no_caffe_module):
    work = tmp_path / "work"
    work.mkdir()
    (work / "cwdlayer_b.py").write_text(textwrap.dedent('''
        from netspec.layers.python import PythonLayerBase

        class Double(PythonLayerBase):
            def reshape(self, bottom, top):
                top[0].reshape(*bottom[0].shape)

            def forward(self, bottom, top):
                top[0].data[...] = 2 * bottom[0].data

            def backward(self, top, propagate_down, bottom):
                bottom[0].diff[...] = 2 * top[0].diff
    '''))
    monkeypatch.chdir(work)
    try:
        layer, tops = make_layer({"type": "Python", "bottom": "x", "top": "y",
                                  "python_param": {"module": "cwdlayer_b", "layer": "Double"}},
                                 [(2, 2)])
        check_gradients(layer, [rand((2, 2))], tops)
        assert str(work) not in sys.path       # the search path is restored after the import
    finally:
        sys.modules.pop("cwdlayer_b", None)


def test_python_layer_public_module():
    mod = pytest.importorskip("netspec.python_layer")
    assert mod.Layer is PythonLayerBase and (mod.TRAIN, mod.TEST) == (0, 1)


# -- GPU ------------------------------------------------------------------------------------------

@pytest.mark.gpu
def test_gpu_python_and_data_layers(py_module):
    from netspec.backend import get_backend, to_numpy

    gpu = get_backend(True, "float32")
    net_param = _py_net(py_module, [
        _py("s", "ScaleShift", "x", "y", '{"shift": 0.5}', param=[{"lr_mult": 1}]),
        _py("loss", "EuclideanLossLayer", ["y", "t"], "loss", loss_weight=1),
    ])
    out = []
    for backend in (F32, gpu):
        net = Net(net_param, "TRAIN", backend)
        net.blobs["x"].data[...] = backend.asarray(rand((3, 2, 2, 1)))
        net.blobs["t"].data[...] = backend.asarray(rand((3, 2, 2, 1), 1))
        net.clear_param_diffs()
        out.append((net.forward_backward(), to_numpy(net.layer_by_name("s").blobs[0].diff)))
    assert out[1][0] == pytest.approx(out[0][0], rel=1e-5)
    np.testing.assert_allclose(out[1][1], out[0][1], rtol=1e-5)
    layer, shapes = make_layer(MEM, [], backend=gpu)
    layer.reset(np.arange(24.0).reshape(4, 6), np.arange(4))
    top = [Blob(f"t{i}", gpu.zeros(s), gpu.xp) for i, s in enumerate(shapes)]
    layer.forward([], top)
    layer.forward([], top)
    np.testing.assert_array_equal(to_numpy(top[1].data), [2, 3])


def test_python_layer_reshaped_calls_its_reshape_and_keeps_its_blobs(py_module):
    """Net.reshape (multi-scale training) runs a Python layer's reshape() for the new shapes, not
    its setup(): its blobs stay the same with their values."""
    net_param = _py_net(py_module, [
        _py("s", "ScaleShift", "x", "y", '{"shift": 0.5}', param=[{"lr_mult": 1}])])
    net = Net(net_param, "TRAIN", F32)
    layer = net.layer_by_name("s")
    blob = layer.blobs[0]
    blob.data[...] = 3.0
    x = rand((2, 2, 5, 1))
    net.blobs["x"].data = x
    assert net.reshape() == ["s"]
    assert net.blobs["y"].shape == (2, 2, 5, 1) and layer.blobs[0] is blob
    net.forward()
    np.testing.assert_allclose(net.blobs["y"].data, 3.0 * x + 0.5, rtol=1e-6)
