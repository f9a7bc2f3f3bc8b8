"""``netspec predict`` and ``netspec.predict``: the LeNet real Caffe trained labels MNIST test
digits written as PNG files at Caffe's recorded accuracy, with the classes and probabilities of
netspec's own forward on the same bytes; the options (top-k, labels, JSON, directories, .npy,
mean, channel swap, oversampling) against NumPy; and one clear error per kind of bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import netspec
from netspec.cli import main
from netspec.data.mnist import load_mnist
from netspec.errors import NetspecError

pytest.importorskip("PIL", reason="predict decodes images with Pillow")
pytest.importorskip("google.protobuf", reason="the trained LeNet is a .prototxt and .caffemodel")

ROOT = Path(__file__).resolve().parents[1]
TRAINED = ROOT / "tests" / "golden" / "caffe" / "lenet_trained"
LENET = TRAINED / "lenet.prototxt"
WEIGHTS = TRAINED / "lenet_iter_10000.caffemodel"
STREET = ROOT / "tests" / "golden" / "images" / "street.jpg"
#: Caffe's accuracy of these weights on the 10,000 test images (accuracy.txt: 0.9903)
CAFFE_ACCURACY = float((TRAINED / "accuracy.txt").read_text())
DIGITS = 200
#: LeNet's transform_param scale: Caffe's net saw bytes × 1/256
LENET_OPTIONS = ["--model", str(LENET), "--weights", str(WEIGHTS), "--scale", "0.00390625"]


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    """The first DIGITS test images as 8-bit PNG files in one folder, and their labels."""
    from PIL import Image

    images, labels = load_mnist("test")
    folder = tmp_path_factory.mktemp("digits")
    for i in range(DIGITS):
        Image.fromarray(images[i, 0]).save(folder / f"{i:04d}.png")
    return folder, images[:DIGITS], labels[:DIGITS]


def run(*args):
    r = CliRunner().invoke(main, ["predict", *map(str, args)])
    return r.exit_code, r.stdout, r.stderr


def json_lines(out: str) -> list[dict]:
    return [json.loads(line) for line in out.splitlines()]


def own_forward(images: np.ndarray) -> np.ndarray:
    """netspec's LeNet on the bytes × 1/256, without predict's decoding and preprocessing."""
    model = netspec.load(LENET, WEIGHTS, batch_size=len(images))
    return model.forward(data=images.astype(np.float32) * np.float32(0.00390625))["prob"]


def test_lenet_labels_mnist_pngs_at_caffes_accuracy(digits):
    folder, images, labels = digits
    code, out, err = run(*LENET_OPTIONS, "--top-k", "1", "--json", "--batch", "64", folder)
    assert code == 0, err
    rows = json_lines(out)
    assert [r["input"] for r in rows] == [str(folder / f"{i:04d}.png") for i in range(DIGITS)]
    predicted = np.array([r["top"][0]["class"] for r in rows])
    accuracy = float(np.mean(predicted == labels))
    # 200 of the 10,000: Caffe's error rate 0.97 % expects about 2 mistakes here
    assert accuracy >= CAFFE_ACCURACY - 0.01, accuracy
    prob = own_forward(images)
    assert predicted.tolist() == prob.argmax(1).tolist()
    np.testing.assert_allclose([r["top"][0]["probability"] for r in rows], prob.max(1),
                               rtol=1e-5, atol=1e-6)
    gold = np.load(TRAINED / "first16.npz")      # real Caffe's probabilities
    np.testing.assert_allclose(prob[:16], gold["prob"], rtol=0, atol=1e-5)


def test_table_top_k_and_labels(digits, tmp_path):
    folder, images, labels = digits
    names = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
    (tmp_path / "digits.txt").write_text("\n".join(names) + "\n\n")
    first = folder / "0000.png"
    code, out, err = run(*LENET_OPTIONS, "--top-k", "3", "--labels", tmp_path / "digits.txt", first)
    assert code == 0, err
    lines = [line.split() for line in out.splitlines()]
    assert lines[0] == ["input", "rank", "class", "label", "probability"]
    prob = own_forward(images[:1])[0]
    order = np.argsort(-prob)[:3]
    assert lines[1][:4] == [str(first), "1", str(order[0]), names[order[0]]]
    assert [row[-3] for row in lines[1:4]] == [str(c) for c in order]
    assert [row[-2] for row in lines[1:4]] == [names[c] for c in order]
    assert len(lines) == 4
    code, out, _ = run(*LENET_OPTIONS, "--top-k", "3", "--json", "--labels",
                       tmp_path / "digits.txt", first)
    top = json_lines(out)[0]["top"]
    assert [t["class"] for t in top] == order.tolist()
    assert [t["label"] for t in top] == [names[c] for c in order]
    p = [t["probability"] for t in top]
    assert p == sorted(p, reverse=True)
    np.testing.assert_allclose(p, prob[order], rtol=1e-5, atol=1e-7)


def test_npy_layouts_give_the_pngs_answers(digits, tmp_path):
    folder, images, _ = digits
    stacks = {"nhw_uint8.npy": images[:5, 0],                                 # N×H×W bytes
              "nchw_uint8.npy": images[:5],                                    # N×1×H×W
              "nhwc_float.npy": images[:5].transpose(0, 2, 3, 1) / 255.0,     # N×H×W×1 in [0, 1]
              "hw_one.npy": images[0, 0]}                                      # one H×W image
    for name, a in stacks.items():
        np.save(tmp_path / name, a)
    code, out, err = run(*LENET_OPTIONS, "--json", "--top-k", "2",
                         *[tmp_path / n for n in stacks], *[folder / f"{i:04d}.png" for i in range(5)])
    assert code == 0, err
    rows = json_lines(out)
    assert [r["input"] for r in rows[:2]] == [f"{tmp_path / 'nhw_uint8.npy'}[{i}]" for i in (0, 1)]
    pngs = [r["top"] for r in rows[-5:]]
    for k in range(3):
        for got, want in zip(rows[5 * k:5 * k + 5], pngs):
            assert [t["class"] for t in got["top"]] == [t["class"] for t in want]
            np.testing.assert_allclose([t["probability"] for t in got["top"]],
                                       [t["probability"] for t in want], rtol=1e-5, atol=1e-7)
    assert len(rows) == 21 and rows[15]["input"] == f"{tmp_path / 'hw_one.npy'}[0]"
    assert [t["class"] for t in rows[15]["top"]] == [t["class"] for t in pngs[0]]
    np.testing.assert_allclose([t["probability"] for t in rows[15]["top"]],
                               [t["probability"] for t in pngs[0]], rtol=1e-5, atol=1e-7)


def test_python_predict_and_oversampling(digits):
    folder, images, _ = digits
    files = [folder / f"{i:04d}.png" for i in range(8)]
    got = netspec.predict(LENET, WEIGHTS, files, scale=0.00390625, top_k=1)
    assert isinstance(got[0], netspec.Prediction)
    assert [g.classes[0] for g in got] == own_forward(images[:8]).argmax(1).tolist()
    # ten crops of 28×28 from the digits resized to 32×32, averaged: NumPy's own crops
    ten = netspec.predict(LENET, WEIGHTS, files[:2], scale=0.00390625, top_k=10,
                          image_dims=(32, 32), oversample=True, batch=20)
    from netspec.images import load_image, resize_image

    model = netspec.load(LENET, WEIGHTS, batch_size=10)
    for g, f in zip(ten, files[:2]):
        big = resize_image(load_image(f, color=False), (32, 32))[:, :, 0]
        windows = [(0, 0), (0, 4), (4, 0), (4, 4), (2, 2)]
        crops = [big[i:i + 28, j:j + 28] for i, j in windows]
        crops += [c[:, ::-1] for c in crops]
        x = np.stack(crops)[:, None] * np.float32(255 * 0.00390625)
        expected = model.forward(data=x)["prob"].mean(0)
        np.testing.assert_allclose(np.array(g.probabilities)[np.argsort(g.classes)], expected,
                                   rtol=1e-5, atol=1e-7)


SMALL_RGB = """
name: small_rgb
layer:
  - {name: data, type: Input, top: data, input_param: {shape: [{dim: [4, 3, 8, 8]}]}}
  - {name: ip, type: InnerProduct, bottom: data, top: ip,
     inner_product_param: {num_output: 5, weight_filler: {type: gaussian, std: 0.05}}}
  - {name: prob, type: Softmax, bottom: ip, top: prob}
"""


def test_colour_net_channel_swap_mean_and_scales(tmp_path):
    """An 8×8 RGB image: predict's input is (BGR pixels × 255 − mean) × scale, by NumPy."""
    from PIL import Image

    rgb = np.random.default_rng(0).integers(0, 256, (8, 8, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "rgb.png")
    (tmp_path / "small.yaml").write_text(SMALL_RGB)
    model = netspec.load(tmp_path / "small.yaml")
    model.save(tmp_path / "small.npz")
    mean = np.array([104.0, 117.0, 123.0], np.float32)
    x = ((rgb[:, :, ::-1].astype(np.float32) / 255 * 255) - mean) * np.float32(0.017)
    expected = model.forward(data=np.repeat(x.transpose(2, 0, 1)[None], 4, 0))["prob"][0]
    got = netspec.predict(tmp_path / "small.yaml", tmp_path / "small.npz", [tmp_path / "rgb.png"],
                          mean_value=mean, scale=0.017, top_k=5)[0]
    np.testing.assert_allclose(np.array(got.probabilities)[np.argsort(got.classes)], expected,
                               rtol=1e-5, atol=1e-7)
    # a mean image larger than the input: its centre; as a .npy of values: the same
    big = np.broadcast_to(mean[:, None, None], (3, 12, 12)).copy()
    big[:, 0, 0] = 1e6                       # outside the centre 8×8
    np.save(tmp_path / "mean.npy", big)
    again = netspec.predict(tmp_path / "small.yaml", tmp_path / "small.npz", [tmp_path / "rgb.png"],
                            mean_file=tmp_path / "mean.npy", scale=0.017, top_k=5)[0]
    np.testing.assert_allclose(again.probabilities, got.probabilities, rtol=1e-6)
    from netspec.pycaffe.io import array_to_blobproto   # Caffe's .binaryproto: 1×3×12×12

    (tmp_path / "mean.binaryproto").write_bytes(array_to_blobproto(big[None]).SerializeToString())
    proto = netspec.predict(tmp_path / "small.yaml", tmp_path / "small.npz", [tmp_path / "rgb.png"],
                            mean_file=tmp_path / "mean.binaryproto", scale=0.017, top_k=5)[0]
    np.testing.assert_allclose(proto.probabilities, got.probabilities, rtol=1e-6)
    # no swap: RGB order fed as it is
    plain = ((rgb.astype(np.float32)) - mean) * np.float32(0.017)
    expected = model.forward(data=np.repeat(plain.transpose(2, 0, 1)[None], 4, 0))["prob"][0]
    got = netspec.predict(tmp_path / "small.yaml", tmp_path / "small.npz", [tmp_path / "rgb.png"],
                          mean_value=mean, scale=0.017, channel_swap=(0, 1, 2), top_k=5)[0]
    np.testing.assert_allclose(np.array(got.probabilities)[np.argsort(got.classes)], expected,
                               rtol=1e-5, atol=1e-7)


def one_error(code: int, err: str, *needles: str) -> str:
    assert code == 1, err
    assert "Traceback" not in err
    line = err.strip()
    assert len(line.splitlines()) == 1, err
    for n in needles:
        assert n in line, line
    return line


def test_errors_name_the_file_and_the_field(digits, tmp_path):
    folder, _, _ = digits
    png = folder / "0000.png"
    bad = tmp_path / "broken.png"
    bad.write_text("not an image")
    one_error(*run(*LENET_OPTIONS, png, bad)[::2], str(bad), "not an image")
    one_error(*run(*LENET_OPTIONS, tmp_path / "absent.png")[::2], "absent.png", "no such file")
    empty = tmp_path / "empty"
    empty.mkdir()
    one_error(*run(*LENET_OPTIONS, empty)[::2], str(empty), "no image files")
    (tmp_path / "short.txt").write_text("zero\none\n")
    one_error(*run(*LENET_OPTIONS, "--labels", tmp_path / "short.txt", png)[::2],
              "short.txt", "2 labels", "10 classes")
    np.save(tmp_path / "mean3.npy", np.zeros((3, 28, 28), np.float32))
    one_error(*run(*LENET_OPTIONS, "--mean-file", tmp_path / "mean3.npy", png)[::2],
              "mean3.npy", "3×28×28", "1×28×28")
    np.save(tmp_path / "small_mean.npy", np.zeros((1, 20, 20), np.float32))
    one_error(*run(*LENET_OPTIONS, "--mean-file", tmp_path / "small_mean.npy", png)[::2],
              "small_mean.npy", "at least 28×28")
    one_error(*run(*LENET_OPTIONS, "--mean-value", "1,2,3", png)[::2], "3 mean values", "1 channel")
    one_error(*run(*LENET_OPTIONS, "--channel-swap", "1,0", png)[::2], "channel swap 1,0")
    np.save(tmp_path / "rgb.npy", np.zeros((2, 28, 28, 3), np.float32))
    one_error(*run(*LENET_OPTIONS, tmp_path / "rgb.npy")[::2], "rgb.npy", "(2, 28, 28, 3)")
    one_error(*run(*LENET_OPTIONS, "--output", "nope", png)[::2], "no blob 'nope'")


def test_a_net_without_probabilities_is_refused_unless_output_names_a_blob(tmp_path, digits):
    folder, images, _ = digits
    text = LENET.read_text()
    cut = text.rindex("layer {")                 # drop the Softmax: ip2 is the net's output
    (tmp_path / "scores.prototxt").write_text(text[:cut])
    args = ["--model", tmp_path / "scores.prototxt", "--weights", WEIGHTS, "--scale", "0.00390625"]
    line = one_error(*run(*args, folder / "0000.png")[::2], "no probability output", "'ip2'",
                     "--output")
    assert "scores.prototxt" in line
    code, out, err = run(*args, "--output", "ip2", "--json", "--top-k", "1", folder / "0000.png")
    assert code == 0, err
    assert json_lines(out)[0]["top"][0]["class"] == int(own_forward(images[:1]).argmax())


def test_python_errors_are_netspec_errors(tmp_path):
    with pytest.raises(NetspecError, match="top_k"):
        netspec.predict(LENET, WEIGHTS, [STREET], top_k=0)


def test_progress_bar_on_a_terminal_only():
    import io

    from netspec.progress import count_progress

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    screen = Terminal()
    with count_progress("predict", stream=screen) as advance:
        advance(3, 5)
        advance(5, 5)
    assert "predict" in screen.getvalue() and "5/5" in screen.getvalue()
    with count_progress("predict", stream=io.StringIO()) as advance:
        assert advance is None


def test_pycaffe_io_and_predict_share_one_image_pipeline():
    import netspec.images as images
    import netspec.pycaffe as caffe

    for name in ("Transformer", "load_image", "resize_image", "oversample"):
        assert getattr(caffe.io, name) is getattr(images, name)
