"""Bad input: one clear message naming file, line and field; exit code != 0; no traceback."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

from click.testing import CliRunner

from netspec.cli import main

GOOD_NET = """\
name: tiny
layer:
  - name: data
    type: Input
    top: data
    input_param: {shape: {dim: [2, 3]}}
  - name: ip
    type: InnerProduct
    bottom: data
    top: ip
    inner_product_param: {num_output: 4}
"""


def validate(tmp_path, text, name="net.yaml"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    result = CliRunner().invoke(main, ["validate", str(path)])
    return path, result


def assert_clear(result, path, line, *words):
    assert result.exit_code != 0, result.output
    out = result.output
    assert "Traceback" not in out
    assert f"{path}:{line}:" in out, out
    for w in words:
        assert w in out, out
    assert len(out.strip().splitlines()) == 1, out


def test_good_net_validates(tmp_path):
    path, result = validate(tmp_path, GOOD_NET)
    assert result.exit_code == 0, result.output
    assert "ip" in result.output and "(2, 4)" in result.output


def test_unknown_key_suggests_nearest(tmp_path):
    path, result = validate(tmp_path, GOOD_NET.replace("num_output: 4", "num_outptu: 4"))
    assert_clear(result, path, 11, "num_outptu", "num_output")


def test_unknown_top_level_key(tmp_path):
    path, result = validate(tmp_path, GOOD_NET.replace("layer:", "layers_x: 1\nlayer:"))
    assert_clear(result, path, 2, "layers_x")


def test_missing_bottom(tmp_path):
    path, result = validate(tmp_path, GOOD_NET.replace("bottom: data", "bottom: dta"))
    assert_clear(result, path, 9, "dta", "'data'")


def test_wrong_type(tmp_path):
    path, result = validate(tmp_path, GOOD_NET.replace("num_output: 4", "num_output: four"))
    assert_clear(result, path, 11, "num_output")


def test_unknown_layer_type(tmp_path):
    path, result = validate(tmp_path, GOOD_NET.replace("type: InnerProduct", "type: InnerProdcut"))
    assert_clear(result, path, 8, "InnerProdcut", "InnerProduct")


def test_bad_enum(tmp_path):
    text = GOOD_NET + "  - {name: pool, type: Pooling, bottom: ip, top: p, pooling_param: {pool: MEAN, kernel_size: 1}}\n"
    path, result = validate(tmp_path, text)
    assert_clear(result, path, 12, "MEAN", "AVE")


def test_yaml_syntax_error(tmp_path):
    path, result = validate(tmp_path, GOOD_NET.replace("{num_output: 4}", "{num_output: 4"))
    assert result.exit_code != 0
    assert str(path) in result.output and "YAML syntax error" in result.output
    assert "Traceback" not in result.output


def test_duplicate_top(tmp_path):
    text = GOOD_NET + "  - {name: ip2, type: InnerProduct, bottom: data, top: ip, inner_product_param: {num_output: 2}}\n"
    path, result = validate(tmp_path, text)
    assert_clear(result, path, 12, "top 'ip'", "already produced")


def test_duplicate_key(tmp_path):
    path, result = validate(tmp_path, GOOD_NET.replace("    top: ip\n", "    top: ip\n    top: ip\n"))
    assert_clear(result, path, 11, "duplicate key")


def test_missing_file(tmp_path):
    result = CliRunner().invoke(main, ["validate", str(tmp_path / "nope.yaml")])
    assert result.exit_code != 0 and "not found" in result.output and "Traceback" not in result.output


def test_weight_decay_needs_regularization_type(tmp_path):
    (tmp_path / "net.yaml").write_text(GOOD_NET)
    path, result = validate(tmp_path, "net: net.yaml\nbase_lr: 0.1\nweight_decay: 0.0005\n", "solver.yaml")
    assert_clear(result, path, 3, "regularization_type", "decoupled", "L2")


def test_solver_net_path_is_relative_to_solver(tmp_path):
    sub = tmp_path / "models"
    sub.mkdir()
    (sub / "net.yaml").write_text(GOOD_NET + "    loss_weight: 1\n")  # training needs a loss
    (tmp_path / "solvers").mkdir()
    solver = tmp_path / "solvers" / "s.yaml"
    solver.write_text("net: ../models/net.yaml\nbase_lr: 0.1\n")
    result = CliRunner().invoke(main, ["validate", str(solver)])
    assert result.exit_code == 0, result.output


def test_bad_lr_policy_value(tmp_path):
    (tmp_path / "net.yaml").write_text(GOOD_NET)
    path, result = validate(tmp_path, "net: net.yaml\nlr_policy: stpe\n", "solver.yaml")
    assert_clear(result, path, 2, "stpe", "step")


def test_set_bad_path_and_value(tmp_path):
    (tmp_path / "net.yaml").write_text(GOOD_NET + "    loss_weight: 1\n")  # training needs a loss
    solver = tmp_path / "solver.yaml"
    solver.write_text("net: net.yaml\nbase_lr: 0.1\n")
    r = CliRunner().invoke(main, ["validate", str(solver), "--set", "layer.nope.param.0.lr_mult=0"])
    assert r.exit_code != 0 and "no layer named 'nope'" in r.output
    r = CliRunner().invoke(main, ["validate", str(solver), "--set", "base_lr=abc"])
    assert r.exit_code != 0 and "--set base_lr=abc" in r.output
    r = CliRunner().invoke(main, ["validate", str(solver), "--set", "layer.ip.inner_product_param.num_output=x"])
    assert r.exit_code != 0 and "num_output" in r.output
    r = CliRunner().invoke(main, ["validate", str(solver), "--set", "momentm=0.9"])
    assert r.exit_code != 0 and "momentum" in r.output


def test_cli_process_exit_code_and_debug(tmp_path):
    path = tmp_path / "net.yaml"
    path.write_text(GOOD_NET.replace("num_output: 4", "num_outptu: 4"))
    r = subprocess.run([sys.executable, "-m", "netspec.cli", "validate", str(path)],
                       capture_output=True, text=True)
    assert r.returncode == 1 and "Traceback" not in r.stderr and "num_outptu" in r.stderr
    r = subprocess.run([sys.executable, "-m", "netspec.cli", "validate", "--debug", str(path)],
                       capture_output=True, text=True)
    assert r.returncode != 0 and "Traceback" in r.stderr


def test_convolution_without_num_output(tmp_path):
    text = GOOD_NET + "  - {name: c, type: Convolution, bottom: data, top: c, convolution_param: {kernel_size: 1}}\n"
    path, result = validate(tmp_path, text.replace("dim: [2, 3]", "dim: [2, 3, 4, 4]"))
    assert result.exit_code != 0 and "num_output is required" in result.output
    assert f"{path}:12:" in result.output


def test_set_reaches_every_layer_of_that_name(tmp_path):
    from netspec.spec import load_net
    from netspec.spec.overrides import split_sets

    _, net_sets = split_sets(["layer.mnist.data_param.batch_size=7"])
    net = load_net(Path(__file__).resolve().parents[1] / "models" / "lenet.yaml", net_sets)
    sizes = [l.data_param.batch_size for l in net.layer if l.name == "mnist"]
    assert sizes == [7, 7]


def test_validate_builds_one_test_net_per_stage():
    root = Path(__file__).resolve().parents[1]
    result = CliRunner().invoke(main, ["validate", str(root / "models" / "exp_fc_decay.yaml")])
    assert result.exit_code == 0, result.output
    assert result.output.count("TEST (stage") == 2
