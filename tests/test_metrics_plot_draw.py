"""The tools around training: metrics files, Caffe log parsing, plot, draw, schema, summary."""

from __future__ import annotations

import importlib.util
import io
import json
import math
import shutil
import sys
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from netspec.cli import main
from netspec.metrics import MetricsWriter, load_run, parse_caffe_log, read_metrics

ROOT = Path(__file__).resolve().parents[1]
HAVE_MPL = importlib.util.find_spec("matplotlib") is not None
HAVE_GRAPHVIZ = importlib.util.find_spec("graphviz") is not None
HAVE_DOT = shutil.which("dot") is not None
HAVE_JSONSCHEMA = importlib.util.find_spec("jsonschema") is not None

needs_mpl = pytest.mark.skipif(not HAVE_MPL, reason="matplotlib is not installed "
                               "(pip install 'netspec[plot]')")
needs_dot = pytest.mark.skipif(not (HAVE_GRAPHVIZ and HAVE_DOT),
                               reason="needs the graphviz package and Graphviz's dot "
                                      "(pip install graphviz; apt-get install graphviz)")
needs_jsonschema = pytest.mark.skipif(not HAVE_JSONSCHEMA, reason="jsonschema is not installed "
                                      "(pip install jsonschema)")


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def fake_events(speed: float, n: int = 1000) -> list[dict]:
    """A plausible run: loss falls, accuracy rises, weight norms grow; ``speed`` sets how fast."""
    events = []
    for it in range(0, n + 1, 100):
        norms = {"conv1/0": 3 + speed * it / 1000, "conv1/1": 0.1, "ip1/0": 10 + it / 500, "ip1/1": 0.2}
        if it % 500 == 0:
            events.append({"event": "test", "iteration": it, "lr": 0.01, "wall_s": it / 100.0,
                           "outputs": {"accuracy": 1 - math.exp(-speed * it / 300),
                                       "loss": 2.3 * math.exp(-speed * it / 300)},
                           "net": 0, "weight_norms": norms})
        loss = 2.3 * math.exp(-speed * it / 200)
        events.append({"event": "train", "iteration": it, "lr": 0.01 * (1 + 1e-4 * it) ** -0.75,
                       "wall_s": it / 100.0 + 0.5, "outputs": {"loss": loss}, "loss": loss,
                       "weight_norms": norms})
    return events


def write_run(path: Path, events: list[dict]) -> Path:
    with MetricsWriter(path) as w:
        for e in events:
            w(e)
    return path


# -- metrics files --------------------------------------------------------------------------
def test_metrics_file_round_trips(tmp_path):
    events = fake_events(1.0)
    path = write_run(tmp_path / "run" / "metrics.jsonl", events)
    assert read_metrics(path) == events
    assert read_metrics(tmp_path / "run") == events          # a directory holding one
    assert load_run(tmp_path / "run") == events
    lines = path.read_text().splitlines()
    assert len(lines) == len(events) and all(json.loads(line) for line in lines)
    # a run killed in the middle of a line loses only that line
    with open(path, "a") as fh:
        fh.write('{"event": "train", "iterat')
    assert read_metrics(path) == events


def test_metrics_writer_is_flushed_per_event_and_json_safe(tmp_path):
    import numpy as np

    w = MetricsWriter(tmp_path / "m.jsonl")
    w({"event": "train", "iteration": np.int64(3), "lr": np.float32(0.5), "wall_s": 1.0,
       "outputs": {"loss": np.float64(0.25)}, "loss": float("nan"), "weight_norms": {}})
    # readable before close: flushed per event
    ev = read_metrics(tmp_path / "m.jsonl")[0]
    assert ev["iteration"] == 3 and ev["lr"] == 0.5 and ev["outputs"] == {"loss": 0.25}
    assert ev["loss"] is None   # NaN is not JSON
    w.close()


def test_solver_events_go_to_the_metrics_file_and_match_the_log(tmp_path):
    """A real (tiny) run: the JSON Lines events equal what parse_caffe_log reads from its log."""
    from netspec.log import CaffeLog
    from netspec.solvers import Solver
    from netspec.spec import load_solver
    from netspec.spec.overrides import split_sets

    sets = ["max_iter=6", "display=3", "test_interval=6", "test_iter=1", "snapshot=0",
            "snapshot_after_train=false"]
    sp = load_solver(ROOT / "solvers" / "mlp.yaml", split_sets(sets)[0])
    log_text = io.StringIO()
    solver = Solver(sp, log=CaffeLog(stream=log_text))
    with MetricsWriter(tmp_path / "metrics.jsonl") as writer:
        solver.listeners.append(writer)
        solver.solve()
    events = read_metrics(tmp_path)
    assert [(e["event"], e["iteration"]) for e in events] == \
        [("test", 0), ("train", 0), ("train", 3), ("train", 6), ("test", 6)]
    assert set(events[1]["weight_norms"]) == {f"fc{i}/{j}" for i in (1, 2, 3) for j in (0, 1)}

    parsed = {(e["event"], e["iteration"]): e for e in parse_caffe_log(log_text.getvalue())}
    for e in events:
        p = parsed[(e["event"], e["iteration"])]
        if p["lr"] is not None:   # no lr line after the last update
            assert p["lr"] == pytest.approx(e["lr"], rel=1e-5)
        assert set(p["outputs"]) == set(e["outputs"])
        for k, v in e["outputs"].items():
            assert p["outputs"][k] == pytest.approx(v, rel=1e-5, abs=1e-6)   # the log keeps 6 digits
        if e["event"] == "train":
            assert p["loss"] == pytest.approx(e["loss"], rel=1e-5)
        assert p["wall_s"] is not None and p["weight_norms"] == {}


def test_train_log_dir_writes_metrics_and_log(tmp_path):
    out = tmp_path / "run"
    args = ["train", ROOT / "solvers" / "mlp.yaml", "--max-iter", "4", "--set", "display=2",
            "--set", "test_interval=4", "--set", "test_iter=1", "--set", "snapshot=0",
            "--set", "snapshot_after_train=false", "--log-dir", out, "--quiet"]
    r = invoke(*args)
    assert r.exit_code == 0, r.output
    events = read_metrics(out)
    assert [(e["event"], e["iteration"]) for e in events] == \
        [("test", 0), ("train", 0), ("train", 2), ("train", 4), ("test", 4)]
    logged = parse_caffe_log(out / "train.log")
    assert {(e["event"], e["iteration"]) for e in logged} == \
        {("test", 0), ("train", 0), ("train", 2), ("train", 4), ("test", 4)}
    assert invoke(*args).exit_code == 0   # a fresh run starts the files afresh
    assert len(read_metrics(out)) == len(events)


CAFFE_LOG = """\
I1126 12:33:40.000000 13086 solver.cpp:279] Solving LeNet
I1126 12:33:40.500000 13086 solver.cpp:330] Iteration 0, Testing net (#0)
I1126 12:33:41.000000 13086 solver.cpp:397]     Test net output #0: accuracy = 0.0958
I1126 12:33:41.000000 13086 solver.cpp:397]     Test net output #1: loss = 2.30259 (* 1 = 2.30259 loss)
I1126 12:33:41.100000 13086 solver.cpp:218] Iteration 0 (0 iter/s, 0.6s/100 iters), loss = 2.31
I1126 12:33:41.100000 13086 solver.cpp:237]     Train net output #0: loss = 2.31 (* 1 = 2.31 loss)
I1126 12:33:41.100000 13086 sgd_solver.cpp:105] Iteration 0, lr = 0.01
I1126 12:33:48.047194 13086 solver.py:0] Iteration 700, loss = 0.175672
I1126 12:33:48.047194 13086 solver.py:0]     Train net output #0: loss = 0.180001 (* 1 = 0.180001 loss)
I1126 12:33:48.047300 13086 sgd_solver.py:0] Iteration 700, lr = 0.00950522
I1126 12:33:50.000000 13086 solver.py:0] Iteration 1000, Testing net (#0)
    Test net output #0: accuracy = 0.9839
    Test net output #1: loss = 5.2e-02 (* 1 = 0.052 loss)
I1126 12:33:50.500000 13086 solver.py:0] Iteration 1000, Testing net (#1)
    Test net output #0: accuracy = 0.97
I1126 12:33:51.000000 13086 solver.py:0] Optimization Done.
"""


def test_parse_caffe_log_snippet(tmp_path):
    events = parse_caffe_log(CAFFE_LOG)
    assert [(e["event"], e["iteration"]) for e in events] == \
        [("test", 0), ("train", 0), ("train", 700), ("test", 1000), ("test", 1000)]
    t0, tr0, tr700, t1000, t1000b = events
    assert t0 == {"event": "test", "iteration": 0, "lr": 0.01, "wall_s": 0.5, "net": 0,
                  "outputs": {"accuracy": 0.0958, "loss": 2.30259}, "weight_norms": {}}
    assert tr0["loss"] == 2.31 and tr0["outputs"] == {"loss": 2.31} and tr0["lr"] == 0.01
    assert tr700["loss"] == 0.175672 and tr700["outputs"] == {"loss": 0.180001}
    assert tr700["lr"] == 0.00950522 and tr700["wall_s"] == pytest.approx(8.047194)
    assert t1000["outputs"] == {"accuracy": 0.9839, "loss": 0.052} and t1000["net"] == 0
    assert t1000b["outputs"] == {"accuracy": 0.97} and t1000b["net"] == 1
    # the same from a file, and load_run tells a text log from a metrics file
    (tmp_path / "caffe.log").write_text(CAFFE_LOG)
    assert parse_caffe_log(tmp_path / "caffe.log") == events
    assert load_run(tmp_path / "caffe.log") == events


# -- plot -------------------------------------------------------------------------------------
def _colour_clusters(png: Path) -> int:
    """Distinct saturated hues in an image (anti-aliased edges keep their line's hue)."""
    import numpy as np
    from matplotlib.colors import rgb_to_hsv
    from matplotlib.image import imread

    rgb = imread(png)[..., :3].reshape(-1, 3)
    hsv = rgb_to_hsv(rgb)
    coloured = hsv[(hsv[:, 1] > 0.35) & (hsv[:, 2] > 0.25)]
    hist = np.histogram(coloured[:, 0], bins=36, range=(0, 1))[0]
    significant = hist > 0.02 * max(len(coloured), 1)
    return sum(1 for i in range(36) if significant[i] and not significant[i - 1])


@needs_mpl
def test_plot_two_runs_gives_two_coloured_lines(tmp_path):
    from matplotlib.image import imread

    a = write_run(tmp_path / "fast" / "metrics.jsonl", fake_events(2.0))
    b = write_run(tmp_path / "slow" / "metrics.jsonl", fake_events(0.7))
    out = tmp_path / "curves.png"
    r = invoke("plot", a.parent, b, "-o", out)
    assert r.exit_code == 0, r.output
    img = imread(out)
    assert img.ndim == 3 and img.shape[0] > 200 and img.shape[1] > 200
    assert (img[..., :3] < 0.99).any(), "the image is blank"
    assert _colour_clusters(out) == 2
    one = tmp_path / "one.png"
    assert invoke("plot", a, "-o", one).exit_code == 0
    assert _colour_clusters(one) == 1


@needs_mpl
def test_plot_metric_panels_and_caffe_logs(tmp_path):
    (tmp_path / "caffe.log").write_text(CAFFE_LOG)
    run = write_run(tmp_path / "run" / "metrics.jsonl", fake_events(1.0))
    out = tmp_path / "acc.svg"
    r = invoke("plot", tmp_path / "caffe.log", run, "-o", out, "--metric", "accuracy",
               "--metric", "lr", "--metric", "conv1/0")
    assert r.exit_code == 0, r.output
    assert out.read_text().lstrip().startswith("<?xml")
    r = CliRunner().invoke(main, ["plot", str(run), "-o", str(tmp_path / "x.png"),
                                  "--metric", "acuracy"])
    assert r.exit_code == 1 and "Did you mean 'accuracy'" in r.output


def test_plot_without_matplotlib_says_how_to_install(tmp_path, monkeypatch):
    run = write_run(tmp_path / "run" / "metrics.jsonl", fake_events(1.0))
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    r = CliRunner().invoke(main, ["plot", str(run), "-o", str(tmp_path / "c.png")])
    assert r.exit_code == 1
    assert "pip install 'netspec[plot]'" in r.output


# -- draw -------------------------------------------------------------------------------------
def _layer_names(phase: str) -> list[str]:
    from netspec.net import Net
    from netspec.spec import load_net

    net = Net(load_net(ROOT / "models" / "lenet.yaml"), phase)
    return [d.lp.name for d in net.defs if d.index is not None]


@needs_dot
@pytest.mark.parametrize("phase", ["TRAIN", "TEST"])
def test_draw_writes_an_svg_with_every_layer(tmp_path, phase):
    out = tmp_path / "lenet.svg"
    r = invoke("draw", ROOT / "models" / "lenet.yaml", "-o", out, "--phase", phase)
    assert r.exit_code == 0, r.output
    svg = out.read_text()
    assert svg.lstrip().startswith("<?xml") and "<svg" in svg
    for name in _layer_names(phase):
        assert f">{name}<" in svg, name
    assert "20×24×24" in svg                      # conv1's top shape labels its edge
    assert ("accuracy" in svg) == (phase == "TEST")
    assert "_split" not in svg                    # inserted Split layers are hidden ...
    r = invoke("draw", ROOT / "models" / "lenet.yaml", "-o", tmp_path / "s.svg", "--phase", "TEST",
               "--show-splits", "--rankdir", "TB")
    assert r.exit_code == 0 and "ip2_ip2_0_split" in (tmp_path / "s.svg").read_text()


@pytest.mark.skipif(not HAVE_GRAPHVIZ, reason="the graphviz package is not installed")
def test_draw_dot_source_needs_no_dot_binary(tmp_path, monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda name: None)
    out = tmp_path / "lenet.dot"
    assert invoke("draw", ROOT / "models" / "lenet.yaml", "-o", out).exit_code == 0
    assert "digraph" in out.read_text() and "conv1" in out.read_text()
    r = CliRunner().invoke(main, ["draw", str(ROOT / "models" / "lenet.yaml"), "-o",
                                  str(tmp_path / "lenet.png")])
    assert r.exit_code == 1 and "apt-get install graphviz" in r.output


def test_draw_without_graphviz_says_how_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "graphviz", None)
    r = CliRunner().invoke(main, ["draw", str(ROOT / "models" / "lenet.yaml"), "-o",
                                  str(tmp_path / "n.svg")])
    assert r.exit_code == 1
    assert "pip install 'netspec[draw]'" in r.output and "apt-get install graphviz" in r.output


# -- schema -----------------------------------------------------------------------------------
def test_committed_schemas_are_current(tmp_path):
    r = invoke("schema", "-o", tmp_path / "net.json", "--solver-out", tmp_path / "solver.json")
    assert r.exit_code == 0, r.output
    assert (tmp_path / "net.json").read_text() == (ROOT / "netspec.schema.json").read_text(), \
        "netspec.schema.json is stale: run `netspec schema` at the repository root"
    assert (tmp_path / "solver.json").read_text() == \
        (ROOT / "netspec.solver.schema.json").read_text(), \
        "netspec.solver.schema.json is stale: run `netspec schema` at the repository root"
    r = CliRunner().invoke(main, ["schema", "--check", "-o", str(ROOT / "netspec.schema.json")])
    assert r.exit_code == 0, r.output


def _validators():
    import jsonschema

    net = json.loads((ROOT / "netspec.schema.json").read_text())
    solver = json.loads((ROOT / "netspec.solver.schema.json").read_text())
    jsonschema.Draft7Validator.check_schema(net)
    jsonschema.Draft7Validator.check_schema(solver)
    return jsonschema.Draft7Validator(net), jsonschema.Draft7Validator(solver)


def _errors(validator, data) -> list[str]:
    from jsonschema.exceptions import best_match

    errs = list(validator.iter_errors(data))
    return [best_match(errs).message] if errs else []


@needs_jsonschema
def test_every_model_and_solver_file_validates():
    net, solver = _validators()
    files = sorted((ROOT / "models").glob("*.yaml")) + sorted((ROOT / "solvers").glob("*.yaml"))
    assert files
    for f in files:
        text = f.read_text()
        is_solver = f.parent.name == "solvers"
        assert text.startswith("# yaml-language-server: $schema=../netspec."
                               + ("solver." if is_solver else "") + "schema.json"), f
        assert _errors(solver if is_solver else net, yaml.safe_load(text)) == [], f


@needs_jsonschema
def test_schema_rejects_unknown_keys_and_accepts_scalars_for_lists():
    net, solver = _validators()
    lenet = yaml.safe_load((ROOT / "models" / "lenet.yaml").read_text())
    conv = next(layer for layer in lenet["layer"] if layer["name"] == "conv1")
    conv["convolution_param"]["kernal_size"] = 3
    assert any("kernal_size" in m for m in _errors(net, lenet))
    del conv["convolution_param"]["kernal_size"]
    conv["typo"] = 1
    assert any("typo" in m for m in _errors(net, lenet))
    del conv["typo"]
    conv["type"] = "Convolutoin"
    assert _errors(net, lenet)
    conv["type"] = "Convolution"
    # a single value stands for a one-element list, as netspec reads it
    conv["bottom"], conv["top"], conv["param"] = "data", ["conv1"], {"lr_mult": 1}
    conv["convolution_param"]["kernel_size"] = [5]
    assert _errors(net, lenet) == []
    sol = yaml.safe_load((ROOT / "solvers" / "lenet.yaml").read_text())
    sol["test_iter"] = [100]
    assert _errors(solver, sol) == []
    sol["base_lrr"] = 0.1
    assert any("base_lrr" in m for m in _errors(solver, sol))
    del sol["base_lrr"]
    del sol["regularization_type"]   # weight_decay != 0 needs it, as netspec says
    assert any("regularization_type" in m for m in _errors(solver, sol))


# -- summary ----------------------------------------------------------------------------------
def test_summary_prints_flops_for_lenet():
    batch = 64                                    # models/lenet.yaml, TRAIN
    conv1 = 2 * 20 * 24 * 24 * 25 * batch         # 2 x (outputs x 1·5·5 multiply-adds)
    conv2 = 2 * 50 * 8 * 8 * (20 * 25) * batch
    ip1 = 2 * 800 * 500 * batch
    ip2 = 2 * 500 * 10 * batch
    r = invoke("summary", ROOT / "models" / "lenet.yaml")
    assert r.exit_code == 0, r.output
    out = r.output
    for value in (conv1, conv2, ip1, ip2):
        assert f"{value:,}" in out, (value, out)
    assert "431,080" in out                      # parameters
    assert "FLOPs" in out and "Memory" in out
    r = invoke("summary", ROOT / "solvers" / "lenet.yaml", "--phase", "TEST", "--json")
    info = json.loads(r.output)
    rows = {row["name"]: row for row in info["layers"]}
    assert rows["conv1"]["flops"] == conv1 // batch * 100
    assert rows["conv1"]["params"][1]["lr_mult"] == 2
    assert info["totals"]["params"] == 431_080
    assert info["totals"]["param_bytes"] == 4 * 431_080
    assert info["totals"]["param_grad_bytes"] == 0          # TEST: no gradients
