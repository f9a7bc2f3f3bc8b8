"""Multi-scale training (eric612/MobileNet-YOLO): several ``resize_param`` policies, one drawn
every 10 batches, and the net set up again for each new input size (``Net.reshape``).

References that are not the code under test: a transcription of the fork's
``roll_weighted_die`` (std::partial_sum in float, boost's uniform_real, std::lower_bound) and of
its ``load_batch`` schedule (a draw when ``iters_ % 10 == 0``); a net built fresh at the new
size with the same weights, whose values a reshaped net must reproduce (float64); the
uninterrupted run, which a resumed one must reproduce bit for bit.
"""

from __future__ import annotations

import bisect
import json
from pathlib import Path

import numpy as np
import pytest

import detection_data

from netspec import training
from netspec.backend import Backend
from netspec.errors import SpecError
from netspec.layers.annotated_data import roll_weighted_die
from netspec.net import Net
from netspec.snapshot import load_npz, unpack_state
from netspec.spec import parse_net
from netspec.spec.inputs import stand_in_inputs

F32 = np.float32
F64 = Backend(np, np.float64)
ZOO = Path(__file__).parent / "zoo_forks"
FORK_TRAIN = "eric612__MobileNet-YOLO__models__yolov3__mobilenet_yolov3_lite_train.prototxt"
#: 32, 48 and 64 pixels; the first never drawn, so the first batch already changes the size
POLICIES = [{"prob": 0.0, "height": 32, "width": 32},
            {"prob": 0.5, "height": 48, "width": 48, "interp_mode": ["LINEAR", "AREA"]},
            {"prob": 0.5, "height": 64, "width": 64}]


def fork_die(u: float, probabilities) -> int:
    """eric612/MobileNet-YOLO's roll_weighted_die (im_transforms.cpp) for boost's uniform u."""
    cumulative, acc = [], F32(0)
    for p in probabilities:                          # std::partial_sum over floats
        acc = F32(acc + F32(p))
        cumulative.append(acc)
    val = F32(F32(u) * (cumulative[-1] - F32(0)) + F32(0))   # uniform_real<float>(0, back)
    return bisect.bisect_left(cumulative, val)       # std::lower_bound


@pytest.mark.parametrize("probs", [[0.2, 0.5, 0.3], [0.1] * 10, [0.0, 0.5, 0.5], [1.0],
                                   [0.25, 0.0, 0.75]])
def test_policy_draw_is_the_forks_roll_weighted_die(probs):
    us = np.random.default_rng(3).random(4000)
    us = np.concatenate([us, [0.0, 0.2, 0.7, 0.5 - 1e-9, np.nextafter(1.0, 0)]])
    ours = [roll_weighted_die(u, probs) for u in us]
    assert ours == [fork_die(u, probs) for u in us]
    freq = np.bincount(ours[:4000], minlength=len(probs)) / 4000
    np.testing.assert_allclose(freq, probs, atol=0.03)


def multiscale_yolov3(train_source: str, test_source: str, batch: int = 8) -> dict:
    """The tests' tiny YOLOv3 (``detection_data.tiny_yolov3``) trained on three sizes."""
    net = detection_data.tiny_yolov3(train_source, test_source, batch)
    net["layer"][0]["transform_param"]["resize_param"] = POLICIES
    return net


def annotated_net(tmp_path, policies, batch=2, images=6) -> Net:
    data, rows = detection_data.boxes_on_noise(images, 0)
    np.savez(tmp_path / "a.npz", data=data, annotation=rows)
    layer = {"name": "data", "type": "AnnotatedData", "top": ["data", "label"],
             "transform_param": {"resize_param": policies},
             "data_param": {"source": str(tmp_path / "a.npz"), "batch_size": batch}}
    return Net(parse_net({"name": "a", "layer": [layer]}), "TRAIN", Backend(np, np.float32),
               np.random.default_rng(5))


def test_a_policy_is_drawn_every_10_batches_with_the_forks_weights(tmp_path):
    probs = [0.2, 0.5, 0.3]
    policies = [{"prob": p, "height": h, "width": h} for p, h in zip(probs, (8, 12, 16))]
    layer = annotated_net(tmp_path, policies).layers[0]
    assert layer.out_hw == (8, 8) and layer.policy == 0          # the first policy at setup
    layer.rng = np.random.default_rng(11)
    twin = np.random.default_rng(11)
    policy, sizes, want = 0, [], []
    for batch in range(95):
        layer._next_policy()
        sizes.append(layer.out_hw)
        if batch % 10 == 0:                                      # iters_ % 10 == 0
            policy = fork_die(twin.random(), probs)
        want.append((policies[policy]["height"],) * 2)
    assert sizes == want and len(set(sizes)) == 3


def test_batches_take_the_drawn_size_resized_from_the_records(tmp_path):
    from netspec.data.image_list import resize_linear
    net = annotated_net(tmp_path, [{"prob": 0.5, "height": 16, "width": 16},
                                   {"prob": 0.5, "height": 24, "width": 20}], batch=3)
    layer, top = net.layers[0], net.blobs["data"]
    data = np.load(tmp_path / "a.npz")["data"]
    seen, previous = set(), None
    for batch in range(40):
        net.forward()
        h, w = (16, 16) if layer.policy == 0 else (24, 20)
        assert top.shape == (3, 1, h, w)
        if batch % 10:
            assert layer.policy == previous              # kept between draws
        previous = layer.policy
        seen.add(top.shape)
        if batch == 0 or (h, w) == (24, 20):
            idx = [(3 * batch + k) % 6 for k in range(3)]
            want = np.stack([resize_linear(data[i], h, w) for i in idx]).astype(F32)
            np.testing.assert_array_equal(top.data, want)  # from the record, not a resized one
    assert len(seen) == 2


@pytest.mark.parametrize("policies, field", [
    ([{"prob": 0.5, "height": 8, "width": 8}, {"prob": 0.6, "height": 9, "width": 9}],
     "transform_param.resize_param"),                             # sum 1.1
    ([{"prob": 0.5, "height": 8, "width": 8}, {"prob": 1.5, "height": 9, "width": 9}],
     "transform_param.resize_param[1].prob"),
    ([{"prob": 0.5, "height": 8, "width": 8}, {"prob": 0.5, "width": 9}],
     "transform_param.resize_param[1].height"),
    ([{"prob": 0.5, "height": 8, "width": 8}], "transform_param.resize_param.prob"),
])
def test_resize_policies_the_fork_refuses_are_refused_naming_the_field(tmp_path, policies, field):
    with pytest.raises(SpecError) as e:
        annotated_net(tmp_path, policies)
    assert e.value.field == field


def test_one_policy_within_the_forks_tolerance_resizes_every_batch(tmp_path):
    net = annotated_net(tmp_path, [{"prob": 0.995, "height": 8, "width": 8}])
    for _ in range(12):
        net.forward()
        assert net.blobs["data"].shape == (2, 1, 8, 8)
    assert net.reshapes == 0 and net.layers[0].state_dict().keys() == {"cursor", "epoch", "order"}


def test_a_layer_whose_parameters_depend_on_the_size_stops_the_reshape_naming_it(tmp_path):
    from netspec.errors import ShapeError
    net = annotated_net(tmp_path, [{"prob": 0.0, "height": 8, "width": 8},
                                   {"prob": 1.0, "height": 12, "width": 12}])
    param = net.param.model_copy(deep=True)
    param.layer.append(parse_net({"name": "b", "layer": [
        {"name": "fc", "type": "InnerProduct", "bottom": "data", "top": "fc",
         "inner_product_param": {"num_output": 3}}]}).layer[0])
    net = Net(param, "TRAIN", Backend(np, np.float32), np.random.default_rng(5))
    with pytest.raises(ShapeError, match=r"layer 'fc' \(InnerProduct\): new bottom shapes would "
                                         r"change its parameter blob 0 \(\(3, 64\) -> \(3, 144\)\)"):
        net.forward()


def fresh_net_at(net: Net, param) -> Net:
    """``param``'s TRAIN net built at the current shapes of ``net``'s data tops (stood in by an
    Input layer) with ``net``'s weights and inputs."""
    shapes = {k: net.blobs[k].shape for k in ("data", "label")}
    fresh = Net(stand_in_inputs(param, shapes)[0], "TRAIN", net.backend,
                np.random.default_rng(9))
    for layer in fresh.layers:
        for mine, theirs in zip(layer.blobs, net.layer_by_name(layer.name).blobs):
            mine.data[...] = theirs.data
    for k in shapes:
        fresh.blobs[k].data[...] = net.blobs[k].data
    return fresh


def diff_sharing(net: Net) -> set:
    """The pairs of blobs whose diffs share memory (``memory_plan``'s plan made real)."""
    blobs = sorted(net.blobs.items())
    return {(a, b) for i, (a, x) in enumerate(blobs) for b, y in blobs[i + 1:]
            if x.data is not y.data and np.shares_memory(x.diff, y.diff)}


def write_solver(folder: Path, **settings) -> Path:
    return detection_data.write_tiny_ssd(folder, train_images=64, test_images=16,
                                         net=multiscale_yolov3,
                                         **{"test_iter": [], "test_interval": 0, "display": 0,
                                            **settings})


def test_a_reshaped_net_computes_what_a_net_built_at_that_size_computes(tmp_path):
    """float64: at every size change of 40 batches, the reshaped TRAIN net of the solver
    (reuse_diffs on) gives the loss, blobs and parameter gradients of a net built fresh at that
    size with the same weights; its parameters stay the solver's very objects, views of its flat
    buffer, their values bit for bit (no update runs)."""
    s = training.solver(write_solver(tmp_path), dtype="float64", reuse_diffs=True).solver
    net = s.net
    assert net.diffs_shared
    params = list(net.params)
    arrays = [p.data for p in params]
    values = [p.data.copy() for p in params]
    checked = []
    for batch in range(40):
        before = net.reshapes
        net.clear_param_diffs()
        loss = net.forward()
        net.backward()
        assert list(net.params) == params and all(
            p.data is a and np.shares_memory(a, s.flat_data) and np.array_equal(a, v)
            for p, a, v in zip(params, arrays, values))
        if net.reshapes == before:
            continue
        fresh = fresh_net_at(net, s.net_param)
        assert fresh.forward() == pytest.approx(loss, rel=1e-12, abs=0)
        fresh.backward()
        for name, blob in fresh.blobs.items():
            np.testing.assert_allclose(net.blobs[name].data, blob.data, rtol=1e-12, atol=1e-12,
                                       err_msg=name)
        for layer in fresh.layers:
            for i, p in enumerate(layer.blobs):
                np.testing.assert_allclose(net.layer_by_name(layer.name).blobs[i].diff, p.diff,
                                           rtol=1e-12, atol=1e-12, err_msg=f"{layer.name}/{i}")
        planned = Net(fresh.param, "TRAIN", net.backend, np.random.default_rng(9),
                      reuse_diffs=True)                  # the memory plan made again
        assert net.shared_diff_bytes == planned.shared_diff_bytes > 0
        assert diff_sharing(net) == diff_sharing(planned) != set()
        checked.append(net.blobs["data"].shape[2])
    assert len(checked) >= 2 and checked[0] != 32 and len(set(checked)) == 2, checked


def test_a_forward_only_net_reshaped_makes_its_blob_sharing_plan_again(tmp_path):
    """A TEST net with shared blob memory (reuse_blobs) whose data layer draws the sizes: after
    each size change the detection head and outputs equal a fresh net's at that size, and the
    shared arrays are those a net built at that size plans."""
    write_solver(tmp_path)
    param = parse_net(multiscale_yolov3("train.npz", "test.npz"))
    param.layer[1].transform_param.resize_param = param.layer[0].transform_param.resize_param
    param.layer[1].data_param.source = str(tmp_path / "test.npz")
    param.layer[1].data_param.batch_size = 2              # random weights: many boxes to NMS
    net = Net(param, "TEST", F64, np.random.default_rng(4), reuse_blobs=True,
              keep_blobs=["head"])
    assert net.blobs_shared and net.blobs["data"].shape[2] == 32
    sizes = set()
    for _ in range(21):                                   # draws at batches 0, 10, 20
        before = net.reshapes
        net.forward()
        if net.reshapes == before:
            continue
        shapes = {k: net.blobs[k].shape for k in ("data", "label")}
        fresh = Net(stand_in_inputs(param, shapes)[0], "TEST", F64, np.random.default_rng(9),
                    reuse_blobs=True, keep_blobs=["head"])
        assert net.shared_bytes == fresh.shared_bytes > 0
        fresh.share_with(net)
        for k in shapes:
            fresh.blobs[k].data[...] = net.blobs[k].data
        fresh.forward()
        for k in ("head", "detection_out", "detection_eval"):
            np.testing.assert_array_equal(net.blobs[k].data, fresh.blobs[k].data, err_msg=k)
        sizes.add(shapes["data"][2])
    assert sizes == {48, 64}


def test_netspec_train_through_size_changes_and_resume_bit_for_bit(tmp_path):
    """`netspec train` (reuse_diffs on) 40 iterations over four draws: finite losses; the
    sizes change; resumed from iteration 15 (a size drawn at 10, the net rebuilt at 32) it
    ends with the uninterrupted run's weights, bit for bit."""
    from click.testing import CliRunner

    from netspec.cli import main
    solver = write_solver(tmp_path, max_iter=40, display=1, snapshot=15,
                          snapshot_prefix="snap/ms", snapshot_after_train=True)
    r = CliRunner().invoke(main, ["train", str(solver), "--log-dir", str(tmp_path / "logs")])
    assert r.exit_code == 0, r.output
    events = [json.loads(line) for line in (tmp_path / "logs" / "metrics.jsonl").open()]
    losses = [e["loss"] for e in events if e["event"] == "train"]
    assert len(losses) >= 40 and np.isfinite(losses).all()
    state = unpack_state(load_npz(tmp_path / "snap" / "ms_iter_40.solverstate.npz"))
    assert int(state["data"]["train:data"]["iters"]) == 40      # 40 batches, 4 draws
    # the same run from Python, watching the sizes, then resumed from iteration 15
    t = training.solver(solver, reuse_diffs=True)
    sizes = []
    for _ in range(40):
        t.step()
        sizes.append(t.solver.net.blobs["data"].shape[2])
    assert len(set(sizes)) == 2 and 32 not in sizes
    assert all(len(set(sizes[k:k + 10])) == 1 for k in range(0, 40, 10))
    resumed = training.solver(solver, reuse_diffs=True,
                              snapshot=tmp_path / "snap" / "ms_iter_15.solverstate.npz")
    assert resumed.solver.net.blobs["data"].shape[2] == 32
    resumed.step(25)
    for name, p in t.solver.net.named_params().items():
        ref = np.load(tmp_path / "snap" / "ms_iter_40.weights.npz")[name]
        np.testing.assert_array_equal(p.data, ref)
        np.testing.assert_array_equal(resumed.solver.net.named_params()[name].data, ref)


def test_the_forks_multiscale_train_file_converts_summarises_and_round_trips(tmp_path):
    """The fork's MobileNet-YOLOv3 training file (ten resize policies, 608 … 320) converts to
    a list of ten ``resize_param``, exports back to the same net, and ``summary --no-data``
    builds it at the first policy's size, saying so."""
    pytest.importorskip("google.protobuf", reason="protobuf is not installed")
    from click.testing import CliRunner

    from netspec.cli import main
    from test_zoo_forks import assert_round_trip
    text = assert_round_trip(ZOO / FORK_TRAIN, tmp_path)
    assert text.count("- prob: 0.1") == 10
    r = CliRunner().invoke(main, ["summary", "--json", "--no-data", str(tmp_path / "net.yaml")])
    assert r.exit_code == 0, r.output
    info = json.loads(r.stdout)
    tops = {x["name"]: [t["shape"] for t in x["tops"]] for x in info["layers"]}
    assert tops["data"] == [[7, 3, 608, 608], [7, 1, 300, 5]]
    assert "the first of 10 resize policies (608×608, 416×416" in info["notes"][0]


def test_the_forks_train_net_reshaped_computes_what_a_fresh_one_computes(tmp_path):
    """The fork's own layers (depthwise convolutions, BatchNorm, Deconvolution, Eltwise, two
    Yolov3 losses): its TRAIN net at 64×64 reshaped to 96×96 gives the loss and gradients of
    one built at 96×96 (float64)."""
    pytest.importorskip("google.protobuf", reason="protobuf is not installed")
    from netspec.caffe import prototxt as ptx
    from netspec.caffe.port import net_yaml
    from netspec.spec import loads_net
    yaml_text = net_yaml(ptx.parse_net((ZOO / FORK_TRAIN).read_text(), FORK_TRAIN), FORK_TRAIN)[0]
    param = loads_net(yaml_text, FORK_TRAIN)
    label = (1, 1, 300, 5)
    small = Net(stand_in_inputs(param, {"data": (1, 3, 64, 64), "label": label})[0], "TRAIN",
                F64, np.random.default_rng(0))
    rng = np.random.default_rng(1)
    truth = np.zeros(label)
    truth[0, 0, :2] = [[3, 0.3, 0.4, 0.2, 0.3], [11, 0.7, 0.6, 0.4, 0.5]]
    params = [p.data for p in small.params]
    small.blobs["data"].data = rng.standard_normal((1, 3, 96, 96))
    small.blobs["label"].data[...] = truth
    assert "conv0" in small.reshape()
    assert all(p.data is a for p, a in zip(small.params, params))
    big = fresh_net_at(small, param)
    assert big.blobs["data"].shape == (1, 3, 96, 96)
    loss = small.forward()
    small.backward()
    assert big.forward() == pytest.approx(loss, rel=1e-12, abs=0) and np.isfinite(loss)
    big.backward()
    for layer in big.layers:
        for i, p in enumerate(layer.blobs):
            np.testing.assert_allclose(small.layer_by_name(layer.name).blobs[i].diff, p.diff,
                                       rtol=1e-10, atol=1e-12, err_msg=f"{layer.name}/{i}")
