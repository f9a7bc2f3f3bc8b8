"""netspec.pycaffe runs the code paths of BVLC Caffe's pycaffe notebooks.

* ``examples/00-classification.ipynb``: load_image + Transformer + forward on one image (and a
  batch, and ``caffe.Classifier``), checked against real Caffe's LeNet probabilities.
* ``examples/net_surgery.ipynb``: fully connected layers cast into convolutions; the
  convolutional net's scores at each position are the original net's scores on that crop.
* ``examples/01-learning-lenet.ipynb``: ``SGDSolver.step`` reading ``solver.net.blobs`` and
  ``solver.test_nets[0].forward()``, checked against ``netspec train``'s own training
  (``workflows.train``) and the Accuracy layer against NumPy.
* ``examples/02-fine-tuning.ipynb``: a NetSpec net with frozen features and a new classifier,
  a ``caffe_pb2.SolverParameter`` solver file, ``copy_from`` the pretrained weights, ``step``,
  ``save`` and a TEST net scored over batches: pretrained features beat random ones.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import netspec.pycaffe as caffe
from netspec.data.mnist import load_mnist
from netspec.errors import ShapeError
from netspec.workflows import train

ROOT = Path(__file__).resolve().parents[1]
TRAINED = ROOT / "tests" / "golden" / "caffe" / "lenet_trained"
IMAGES = ROOT / "tests" / "golden" / "images"
LENET = TRAINED / "lenet.prototxt"
WEIGHTS = TRAINED / "lenet_iter_10000.caffemodel"

pytest.importorskip("PIL", reason="caffe.io.load_image reads images with Pillow")
pytest.importorskip("google.protobuf", reason=".prototxt and .caffemodel need protobuf")


# -- 00-classification ----------------------------------------------------------------------------
def mnist_transformer(net):
    transformer = caffe.io.Transformer({"data": net.blobs["data"].data.shape})
    transformer.set_transpose("data", (2, 0, 1))   # H×W×K -> K×H×W
    transformer.set_raw_scale("data", 255)         # [0, 1] -> [0, 255]
    transformer.set_input_scale("data", 0.00390625)  # LeNet's transform_param scale
    return transformer


def test_classification_of_one_image_file():
    caffe.set_mode_cpu()
    net = caffe.Net(str(LENET), caffe.TEST, weights=str(WEIGHTS))
    transformer = mnist_transformer(net)
    image = caffe.io.load_image(str(IMAGES / "mnist_test_0.png"), color=False)
    assert image.shape == (28, 28, 1) and image.dtype == np.float32 and image.max() <= 1
    net.blobs["data"].reshape(1, 1, 28, 28)
    transformed_image = transformer.preprocess("data", image)
    net.blobs["data"].data[...] = transformed_image
    output = net.forward()
    output_prob = output["prob"][0]
    gold = np.load(TRAINED / "first16.npz")       # real Caffe on the same image
    np.testing.assert_allclose(output_prob, gold["prob"][0], rtol=0, atol=1e-5)
    assert output_prob.argmax() == gold["label"][0] == 7
    top_inds = output_prob.argsort()[::-1][:5]
    assert top_inds[0] == 7
    # forward returns the net's own array, as pycaffe does
    assert output["prob"] is not None and np.shares_memory(output["prob"], net.blobs["prob"].data)


def test_classification_of_a_batch_written_as_png_files(tmp_path):
    from PIL import Image

    images, labels = load_mnist("test")
    paths = []
    for i in range(16):
        paths.append(tmp_path / f"{i}.png")
        Image.fromarray(images[i, 0]).save(paths[-1])
    net = caffe.Net(str(LENET), str(WEIGHTS), caffe.TEST)  # the older argument order
    net.blobs["data"].reshape(16, 1, 28, 28)
    transformer = mnist_transformer(net)
    for i, p in enumerate(paths):
        net.blobs["data"].data[i] = transformer.preprocess("data", caffe.io.load_image(str(p), False))
    prob = net.forward()["prob"]
    gold = np.load(TRAINED / "first16.npz")
    np.testing.assert_allclose(prob, gold["prob"], rtol=0, atol=1e-5)
    # caffe.Classifier: the same scores through resize, centre crop and forward_all (batch 64)
    clf = caffe.Classifier(str(LENET), str(WEIGHTS), image_dims=(28, 28), raw_scale=255,
                           input_scale=0.00390625)
    scores = clf.predict([caffe.io.load_image(str(p), False) for p in paths], oversample=False)
    np.testing.assert_allclose(scores, gold["prob"], rtol=0, atol=1e-5)
    assert clf.predict([caffe.io.load_image(str(paths[0]), False)]).shape == (1, 10)


def test_transformer_on_a_colour_photograph():
    image = caffe.io.load_image(str(IMAGES / "street.jpg"))
    assert image.shape == (375, 500, 3) and 0 <= image.min() and image.max() <= 1
    mean = np.array([104.0, 117.0, 123.0])          # BGR, as ilsvrc_2012_mean averaged
    t = caffe.io.Transformer({"data": (1, 3, 375, 500)})
    t.set_transpose("data", (2, 0, 1))
    t.set_channel_swap("data", (2, 1, 0))
    t.set_raw_scale("data", 255)
    t.set_mean("data", mean)
    t.set_input_scale("data", 0.5)
    out = t.preprocess("data", image)
    # NumPy, step by step as the notebook describes it
    expected = (image[:, :, ::-1].transpose(2, 0, 1) * 255 - mean[:, None, None]) * 0.5
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-3)
    np.testing.assert_allclose(t.deprocess("data", out), image, atol=1e-5)
    # resized to a net's input: bilinear as Pillow computes it when enlarging
    small = image[100:110, 200:212]
    t2 = caffe.io.Transformer({"data": (1, 3, 25, 30)})
    t2.set_transpose("data", (2, 0, 1))
    from PIL import Image

    pil = np.stack([np.asarray(Image.fromarray(small[:, :, c]).resize((30, 25), Image.BILINEAR))
                    for c in range(3)])
    np.testing.assert_allclose(t2.preprocess("data", small), pil, atol=1e-5)


def test_io_protos_round_trip():
    a = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    np.testing.assert_array_equal(caffe.io.blobproto_to_array(caffe.io.array_to_blobproto(a)), a)
    d = caffe.io.array_to_datum(np.arange(12, dtype=np.uint8).reshape(3, 2, 2), label=4)
    assert d.label == 4 and d.channels == 3
    np.testing.assert_array_equal(caffe.io.datum_to_array(d), np.arange(12).reshape(3, 2, 2))
    f = caffe.io.array_to_datum(a[:1] / 7)
    np.testing.assert_allclose(caffe.io.datum_to_array(f), a[:1] / 7, rtol=1e-6)
    crops = caffe.io.oversample([np.arange(16.0).reshape(4, 4, 1)], (2, 2))
    assert crops.shape == (10, 2, 2, 1)
    np.testing.assert_array_equal(crops[0, :, :, 0], [[0, 1], [4, 5]])
    np.testing.assert_array_equal(crops[5, :, :, 0], [[1, 0], [5, 4]])  # mirrored


# -- net_surgery ----------------------------------------------------------------------------------
FC_PROTOTXT = """
name: "fc"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 2 dim: 3 dim: 10 dim: 10 } } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
  convolution_param { num_output: 4 kernel_size: 3 weight_filler { type: "gaussian" std: 0.3 }
                      bias_filler { type: "gaussian" std: 0.3 } } }
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }
layer { name: "pool1" type: "Pooling" bottom: "conv1" top: "pool1"
  pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layer { name: "fc6" type: "InnerProduct" bottom: "pool1" top: "fc6"
  inner_product_param { num_output: 16 weight_filler { type: "gaussian" std: 0.3 }
                        bias_filler { type: "gaussian" std: 0.3 } } }
layer { name: "relu6" type: "ReLU" bottom: "fc6" top: "fc6" }
layer { name: "fc7" type: "InnerProduct" bottom: "fc6" top: "fc7"
  inner_product_param { num_output: 5 weight_filler { type: "gaussian" std: 0.3 }
                        bias_filler { type: "gaussian" std: 0.3 } } }
layer { name: "prob" type: "Softmax" bottom: "fc7" top: "prob" }
"""

FULL_CONV_YAML = """
name: full_conv
layer:
  - {name: data, type: Input, top: data, input_param: {shape: [{dim: [1, 3, 14, 14]}]}}
  - {name: conv1, type: Convolution, bottom: data, top: conv1,
     convolution_param: {num_output: 4, kernel_size: 3}}
  - {name: relu1, type: ReLU, bottom: conv1, top: conv1}
  - {name: pool1, type: Pooling, bottom: conv1, top: pool1,
     pooling_param: {pool: MAX, kernel_size: 2, stride: 2}}
  - {name: fc6-conv, type: Convolution, bottom: pool1, top: fc6-conv,
     convolution_param: {num_output: 16, kernel_size: 4}}
  - {name: relu6, type: ReLU, bottom: fc6-conv, top: fc6-conv}
  - {name: fc7-conv, type: Convolution, bottom: fc6-conv, top: fc7-conv,
     convolution_param: {num_output: 5, kernel_size: 1}}
  - {name: prob, type: Softmax, bottom: fc7-conv, top: prob}
"""


def test_net_surgery_casts_fully_connected_layers_to_convolutions(tmp_path):
    (tmp_path / "fc.prototxt").write_text(FC_PROTOTXT)
    (tmp_path / "full_conv.yaml").write_text(FULL_CONV_YAML)
    net = caffe.Net(str(tmp_path / "fc.prototxt"), caffe.TEST)
    net.save(str(tmp_path / "fc.caffemodel"))
    params = ["fc6", "fc7"]
    fc_params = {pr: (net.params[pr][0].data, net.params[pr][1].data) for pr in params}
    assert fc_params["fc6"][0].shape == (16, 64)
    # conv1 comes from the caffemodel (same layer name); fc6-conv and fc7-conv are new
    net_full_conv = caffe.Net(str(tmp_path / "full_conv.yaml"), str(tmp_path / "fc.caffemodel"),
                              caffe.TEST)
    params_full_conv = ["fc6-conv", "fc7-conv"]
    conv_params = {pr: (net_full_conv.params[pr][0].data, net_full_conv.params[pr][1].data)
                   for pr in params_full_conv}
    assert conv_params["fc6-conv"][0].shape == (16, 4, 4, 4)
    for pr, pr_conv in zip(params, params_full_conv):
        conv_params[pr_conv][0].flat = fc_params[pr][0].flat  # flat unrolled arrays
        conv_params[pr_conv][1][...] = fc_params[pr][1]
    net_full_conv.save(str(tmp_path / "full_conv.caffemodel"))

    image = np.random.default_rng(0).normal(size=(1, 3, 14, 14)).astype(np.float32)
    out = net_full_conv.forward(data=image)["prob"]
    assert out.shape == (1, 5, 3, 3)
    # the reference: the original net on each 10×10 crop (stride 2 = the pooling's)
    for i in range(3):
        crops = np.concatenate([image[:, :, 2 * i:2 * i + 10, 2 * j:2 * j + 10] for j in range(2)])
        scores = net.forward(data=crops)["prob"]
        for j in range(2):
            np.testing.assert_allclose(out[0, :, i, j], scores[j], rtol=1e-5, atol=1e-6)
    # the saved surgery reloads in a fresh net
    again = caffe.Net(str(tmp_path / "full_conv.yaml"), caffe.TEST,
                      weights=str(tmp_path / "full_conv.caffemodel"))
    np.testing.assert_array_equal(again.forward(data=image)["prob"], out)


# -- 01-learning-lenet ----------------------------------------------------------------------------
def lenet_solver(folder: Path, max_iter: int) -> Path:
    path = folder / "lenet_solver.yaml"
    path.write_text(f"net: {ROOT / 'models' / 'lenet.yaml'}\ntest_iter: 1\ntest_interval: 100000\n"
                    "test_initialization: false\nbase_lr: 0.01\nmomentum: 0.9\n"
                    "weight_decay: 0.0005\nregularization_type: L2\nlr_policy: inv\n"
                    f"gamma: 0.0001\npower: 0.75\nmax_iter: {max_iter}\nrandom_seed: 1\n"
                    f"snapshot_after_train: false\nsnapshot_prefix: {folder}/lenet\n")
    return path


def learn(solver, niter):
    """The notebook's loop: step, read the train loss, run the test net."""
    train_loss = np.zeros(niter)
    for it in range(niter):
        solver.step(1)
        train_loss[it] = solver.net.blobs["loss"].data
        solver.test_nets[0].forward(start="conv1")
    return train_loss


def test_learning_lenet_with_sgd_solver(tmp_path):
    solver = caffe.SGDSolver(str(lenet_solver(tmp_path, 8)))
    assert [(k, v.data.shape) for k, v in solver.net.blobs.items()][0] == ("data", (64, 1, 28, 28))
    assert [(k, v[0].data.shape) for k, v in solver.net.params.items()][0] == ("conv1", (20, 1, 5, 5))
    # (the notebook also runs solver.net.forward() here: that takes a training batch, so the
    # steps below would see other batches than `netspec train`, as in Caffe)
    solver.test_nets[0].forward()
    test_net = solver.test_nets[0]
    assert test_net.blobs["label"].data[:8].tolist() == load_mnist("test")[1][:8].tolist()
    train_loss = learn(solver, 8)
    assert solver.iter == 8 and np.all(np.isfinite(train_loss))
    # the reference: `netspec train` on the same solver file, 8 iterations
    cli = train(tmp_path / "lenet_solver.yaml", quiet=True).solver.net
    for layer, blobs in solver.net.params.items():
        for i, blob in enumerate(blobs):
            np.testing.assert_array_equal(blob.data, cli.layer_by_name(layer).blobs[i].data)
    # the notebook's accuracy by hand equals the Accuracy layer
    test_net.forward()
    correct = (test_net.blobs["ip2"].data.argmax(1) == test_net.blobs["label"].data).mean()
    assert correct == pytest.approx(float(test_net.blobs["accuracy"].data))


@pytest.mark.slow
def test_learning_lenet_reaches_high_accuracy(tmp_path):
    solver = caffe.SGDSolver(str(lenet_solver(tmp_path, 300)))
    train_loss = learn(solver, 300)
    assert train_loss[-20:].mean() < train_loss[:5].mean() / 5
    accs = []
    for _ in range(10):
        solver.test_nets[0].forward()
        accs.append(float(solver.test_nets[0].blobs["accuracy"].data))
    assert np.mean(accs) > 0.9


# -- 02-fine-tuning --------------------------------------------------------------------------------
def parity_set(folder: Path, split: str, n: int) -> Path:
    """MNIST digits of ``split`` as PNG files and an ImageData list labelling each by parity
    (the notebook's new task: Flickr styles there, even/odd digits here)."""
    from PIL import Image

    images, labels = load_mnist(split)
    folder.mkdir()
    lines = []
    for i in range(n):
        Image.fromarray(images[i].reshape(28, 28)).save(folder / f"{i}.png")
        lines.append(f"{i}.png {int(labels[i]) % 2}")
    (folder / "list.txt").write_text("\n".join(lines) + "\n")
    return folder / "list.txt"


def parity_net(source: Path, train: bool, learn_all: bool = False) -> str:
    """The notebook's ``style_net``: LeNet's layers (frozen unless ``learn_all``: lr_mult 0)
    with a new two-class classifier ``ip2_parity``, on ImageData."""
    L, P = caffe.layers, caffe.params
    learned = [dict(lr_mult=1, decay_mult=1), dict(lr_mult=2, decay_mult=0)]
    param = learned if learn_all else [dict(lr_mult=0)] * 2
    n = caffe.NetSpec()
    n.data, n.label = L.ImageData(source=str(source), root_folder=str(source.parent) + "/",
                                  batch_size=50, is_color=False, shuffle=train,
                                  transform_param=dict(scale=0.00390625), ntop=2)
    n.conv1 = L.Convolution(n.data, num_output=20, kernel_size=5, param=param)
    n.pool1 = L.Pooling(n.conv1, pool=P.Pooling.MAX, kernel_size=2, stride=2)
    n.conv2 = L.Convolution(n.pool1, num_output=50, kernel_size=5, param=param)
    n.pool2 = L.Pooling(n.conv2, pool=P.Pooling.MAX, kernel_size=2, stride=2)
    n.ip1 = L.InnerProduct(n.pool2, num_output=500, param=param)
    n.relu1 = L.ReLU(n.ip1, in_place=True)
    n.ip2_parity = L.InnerProduct(n.relu1, num_output=2, param=learned,
                                  weight_filler=dict(type="xavier"))
    n.loss = L.SoftmaxWithLoss(n.ip2_parity, n.label)
    n.acc = L.Accuracy(n.ip2_parity, n.label)
    return str(n.to_proto())


def parity_solver(folder: Path, train_net: Path, test_net: Path) -> Path:
    """The notebook's ``solver()``: a SolverParameter written with caffe_pb2."""
    from netspec.pycaffe.proto import caffe_pb2

    s = caffe_pb2.SolverParameter()
    s.train_net = str(train_net)
    s.test_net.append(str(test_net))
    s.test_interval = 1000
    s.test_iter.append(4)
    s.max_iter = 100000
    s.type = "SGD"
    s.base_lr = 0.01
    s.lr_policy = "step"
    s.gamma = 0.1
    s.stepsize = 20000
    s.momentum = 0.9
    s.weight_decay = 5e-4
    s.display = 1000
    s.snapshot = 10000
    s.snapshot_prefix = str(folder / "finetune_parity")
    s.random_seed = 2
    s.solver_mode = caffe_pb2.SolverParameter.CPU
    path = folder / "solver.prototxt"
    path.write_text(str(s))
    return path


def test_fine_tuning_a_pretrained_nets_new_last_layer(tmp_path):
    """02-fine-tuning's code path on MNIST parity: a NetSpec net whose features are frozen,
    a caffe_pb2 solver file, ``get_solver``, ``copy_from`` the pretrained weights, ``step``
    reading the loss and accuracy blobs, ``net.save``, then a TEST-phase ``caffe.Net`` scored
    over batches. As in the notebook, the pretrained features beat random ones by far, and
    the frozen layers keep the pretrained values."""
    train_list = parity_set(tmp_path / "train", "train", 500)
    test_list = parity_set(tmp_path / "test", "test", 200)
    train_net, test_net = tmp_path / "train.prototxt", tmp_path / "test.prototxt"
    train_net.write_text(parity_net(train_list, train=True))
    test_net.write_text(parity_net(test_list, train=False))
    solver_path = parity_solver(tmp_path, train_net, test_net)
    pretrained = caffe.get_solver(str(solver_path))
    pretrained.net.copy_from(str(WEIGHTS))
    scratch = caffe.get_solver(str(solver_path))
    accs = {}
    for name, s in [("pretrained", pretrained), ("scratch", scratch)]:
        acc = []
        for _ in range(30):
            s.step(1)
            acc.append(float(s.net.blobs["acc"].data))
        weights = tmp_path / f"{name}.caffemodel"
        s.net.save(str(weights))
        test = caffe.Net(str(test_net), str(weights), caffe.TEST)
        accs[name] = np.mean([float(test.forward()["acc"]) for _ in range(4)])
        assert np.isfinite(float(s.net.blobs["loss"].data)) and len(acc) == 30
    reference = caffe.Net(str(LENET), str(WEIGHTS), caffe.TEST)
    for layer in ("conv1", "conv2", "ip1"):   # frozen: lr_mult 0
        np.testing.assert_array_equal(pretrained.net.params[layer][0].data,
                                      reference.params[layer][0].data)
    assert accs["pretrained"] > 0.9, accs
    assert accs["pretrained"] > accs["scratch"] + 0.1, accs


# -- the rest of the interface --------------------------------------------------------------------
def test_solver_classes_force_their_type(tmp_path):
    path = lenet_solver(tmp_path, 2)
    assert caffe.AdamSolver(str(path)).param.type == "Adam"
    assert caffe.NesterovSolver(str(path)).param.type == "Nesterov"
    assert caffe.get_solver(str(path)).param.type == "SGD"
    s = caffe.SGDSolver(str(path))
    s.step(1)
    s.snapshot()
    states = sorted(tmp_path.glob("lenet_iter_1.solverstate.npz"))
    s.step(1)
    s.restore(str(states[0]))
    assert s.iter == 1
    with pytest.raises(NotImplementedError, match="add_callback"):
        s.add_callback(None, None)


def test_blob_attributes_and_unsupported_features():
    net = caffe.Net(str(LENET), caffe.TEST)
    data = net.blobs["data"]
    assert (data.num, data.channels, data.height, data.width) == (64, 1, 28, 28)
    assert data.count == 64 * 28 * 28 and data.shape == (64, 1, 28, 28)
    assert net.blobs["prob"].height == 1
    assert net.inputs == ["data"] and net.outputs == ["prob"]
    assert net._layer_names[:2] == ["data", "conv1"] and net.layers[1].type == "Convolution"
    assert net.layer_dict["conv1"].blobs[0].data.shape == (20, 1, 5, 5)
    assert net.top_names["conv1"] == ["conv1"] and net.bottom_names["conv1"] == ["data"]
    with pytest.raises(NotImplementedError, match="Blob.reshape of 'conv1'"):
        net.blobs["conv1"].reshape(1, 2)
    with pytest.raises(NotImplementedError, match="save_hdf5"):
        net.save_hdf5("x.h5")
    with pytest.raises(ShapeError, match="batch sized"):
        net.forward(data=np.zeros((2, 1, 28, 28)))
    with pytest.raises(TypeError, match="phase"):
        caffe.Net(str(LENET))
    swapped = caffe.Net(str(LENET), caffe.TEST, str(WEIGHTS))
    np.testing.assert_array_equal(swapped.params["ip2"][1].data,
                                  caffe.Net(str(LENET), str(WEIGHTS), caffe.TEST).params["ip2"][1].data)
    assert swapped.params["ip2"][1].data.any()


def test_backward_returns_input_gradients(tmp_path):
    """With force_backward, backward(prob=…) gives d(input): finite differences on two pixels."""
    text = LENET.read_text().replace('name: "LeNet"', 'name: "LeNet"\nforce_backward: true')
    (tmp_path / "lenet.prototxt").write_text(text)
    net = caffe.Net(str(tmp_path / "lenet.prototxt"), str(WEIGHTS), caffe.TEST)
    net.blobs["data"].reshape(1, 1, 28, 28)
    x = load_mnist("test")[0][:1].astype(np.float64) / 256
    net.forward(data=x)
    top = np.zeros((1, 10), np.float32)
    top[0, 7] = 1
    grad = net.backward(prob=top)["data"].copy()
    for pos in [(0, 0, 14, 14), (0, 0, 10, 16)]:
        eps = 1e-2
        xp, xm = x.copy(), x.copy()
        xp[pos] += eps
        xm[pos] -= eps
        fp = float(net.forward(data=xp)["prob"][0, 7])
        fm = float(net.forward(data=xm)["prob"][0, 7])
        assert grad[pos] == pytest.approx((fp - fm) / (2 * eps), rel=0.05, abs=1e-4)


# -- net_spec -------------------------------------------------------------------------------------
def lenet_spec(L, P, top):
    """01-learning-lenet's lenet(), with an Input layer for the deploy net."""
    n = caffe.NetSpec()
    n.data = L.Input(input_param=dict(shape=dict(dim=[64, 1, 28, 28])))
    lr = [dict(lr_mult=1), dict(lr_mult=2)]
    fill = dict(weight_filler=dict(type="xavier"), bias_filler=dict(type="constant"))
    n.conv1 = L.Convolution(n.data, param=lr, num_output=20, kernel_size=5, stride=1, **fill)
    n.pool1 = L.Pooling(n.conv1, pool=P.Pooling.MAX, kernel_size=2, stride=2)
    n.conv2 = L.Convolution(n.pool1, param=lr, num_output=50, kernel_size=5, stride=1, **fill)
    n.pool2 = L.Pooling(n.conv2, pool=P.Pooling.MAX, kernel_size=2, stride=2)
    n.ip1 = L.InnerProduct(n.pool2, param=lr, num_output=500, **fill)
    n.relu1 = L.ReLU(n.ip1, in_place=True)
    n.ip2 = L.InnerProduct(n.relu1, param=lr, num_output=10, **fill)
    n[top] = L.Softmax(n.ip2)
    return n


def test_net_spec_writes_caffes_own_lenet(tmp_path):
    from netspec.caffe import prototxt as ptx

    n = lenet_spec(caffe.layers, caffe.params, "prob")
    proto = n.to_proto()
    proto.name = "LeNet"
    _, caffe_msg, _ = ptx.read(LENET)                 # the deploy net Caffe trained
    assert proto == caffe_msg
    (tmp_path / "lenet.prototxt").write_text(str(proto))
    net = caffe.Net(str(tmp_path / "lenet.prototxt"), str(WEIGHTS), caffe.TEST)
    assert net._layer_names == ["data", "conv1", "pool1", "conv2", "pool2", "ip1", "relu1",
                                "ip2", "prob"]
    # a training net as the notebook writes it: Data layer fields, two tops, auto names
    L, P = caffe.layers, caffe.params
    t = caffe.NetSpec()
    t.data, t.label = L.Data(batch_size=64, backend=P.Data.LMDB, source="mnist_train_lmdb",
                             transform_param=dict(scale=1. / 255), ntop=2)
    t.loss = L.SoftmaxWithLoss(L.InnerProduct(t.data, num_output=10), t.label)
    msg = t.to_proto()
    assert [x.name for x in msg.layer] == ["data", "InnerProduct1", "loss"]
    assert msg.layer[0].data_param.batch_size == 64 and msg.layer[0].data_param.backend == 1
    assert msg.layer[0].transform_param.scale == pytest.approx(1 / 255)
    assert list(msg.layer[2].bottom) == ["InnerProduct1", "label"]


SMALL_RGB = """
name: small_rgb
layer:
  - {name: data, type: Input, top: data, input_param: {shape: [{dim: [10, 3, 8, 8]}]}}
  - {name: conv, type: Convolution, bottom: data, top: conv,
     convolution_param: {num_output: 4, kernel_size: 3, weight_filler: {type: gaussian, std: 0.5}}}
  - {name: ip, type: InnerProduct, bottom: conv, top: ip,
     inner_product_param: {num_output: 5, weight_filler: {type: gaussian, std: 0.5}}}
  - {name: prob, type: Softmax, bottom: ip, top: prob}
"""


def test_classifier_oversamples_a_photograph(tmp_path):
    """Classifier.predict with oversample: the mean of the net's scores on the ten crops
    (corners, centre, mirrors) of the resized photograph, preprocessed by NumPy."""
    import netspec

    (tmp_path / "small.yaml").write_text(SMALL_RGB)
    model = netspec.load(tmp_path / "small.yaml")
    model.save(tmp_path / "small.npz")
    mean = np.array([0.4, 0.5, 0.6], np.float32)
    clf = caffe.Classifier(str(tmp_path / "small.yaml"), str(tmp_path / "small.npz"),
                           image_dims=(12, 12), mean=mean, raw_scale=1.0, channel_swap=(2, 1, 0))
    image = caffe.io.load_image(str(IMAGES / "street.jpg"))
    scores = clf.predict([image])
    resized = caffe.io.resize_image(image, (12, 12))
    crops = [resized[i:i + 8, j:j + 8] for i, j in [(0, 0), (0, 4), (4, 0), (4, 4), (2, 2)]]
    crops += [c[:, ::-1] for c in crops]
    batch = np.stack([c[:, :, ::-1].transpose(2, 0, 1) - mean[:, None, None] for c in crops])
    expected = model.forward(data=batch)["prob"].mean(0)
    np.testing.assert_allclose(scores[0], expected, rtol=1e-5, atol=1e-6)
    centre = clf.predict([image], oversample=False)
    np.testing.assert_allclose(centre[0], model.forward(data=np.repeat(batch[4:5], 10, 0))["prob"][0],
                               rtol=1e-5, atol=1e-6)
