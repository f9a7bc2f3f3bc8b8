"""Hostile inputs to the YAML loader and the net-spec layer: each is refused quickly with one
message naming the file, the line and the field (or accepted where Caffe accepts it)."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner

from netspec.cli import main
from netspec.errors import SpecError
from netspec.spec import load_solver, loads_net

NET = """\
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

LOSS = """\
  - name: label
    type: Input
    top: label
    input_param: {shape: {dim: [2, 4]}}
  - name: loss
    type: EuclideanLoss
    bottom: [ip, label]
    top: loss
"""


def write(tmp_path: Path, text: str, name: str = "net.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def assert_error(result, file, line, *words):
    """One `netspec: error:` line naming file:line and every word; no traceback."""
    out = result.output
    assert result.exit_code == 1, out
    assert "Traceback" not in out and "internal error" not in out, out
    assert len(out.strip().splitlines()) == 1, out
    where = f"{file}:{line}:" if line else f"{file}:"
    assert out.startswith("netspec: error: " + where), out
    for w in words:
        assert w in out, out


def spec_error(fn, *args) -> SpecError:
    with pytest.raises(SpecError) as e:
        fn(*args)
    return e.value


@pytest.mark.parametrize("value, words", [
    ("true", ["kernel_size", "expected an integer, got the boolean true"]),
    ("[3, false]", ["kernel_size[1]", "got the boolean false"]),
    ("'3'", ["got the text '3'", "without quotes"]),
    ("1e3", ["got the text '1e3'", "1000 rather than 1e3"]),
    ("three", ["got the text 'three'"]),
    ("4294967296", ["4294967296 is out of range", "32-bit"]),
])
def test_int_fields_take_integers_only(tmp_path, value, words):
    text = NET + f"""\
  - name: conv
    type: Convolution
    bottom: data
    top: conv
    convolution_param: {{num_output: 2, kernel_size: {value}}}
"""
    path = write(tmp_path, text)
    assert_error(run("validate", path), path, 16, "convolution_param.kernel_size", *words)


def test_a_bool_list_item_on_its_own_line_is_blamed_on_that_line(tmp_path):
    text = NET.replace("    top: data\n", "    top: data\n    loss_weight:\n      - 0.5\n      - true\n")
    # the line of the item, not of the list
    err = spec_error(loads_net, text, "n.yaml")
    assert err.line == 8 and err.field == "layer[0].loss_weight[1]"
    assert "got the boolean true" in err.message


def test_integral_floats_are_ints_and_float_fields_take_numbers(tmp_path):
    net = loads_net(NET.replace("num_output: 4", "num_output: 4.0"))
    assert net.layer[1].inner_product_param.num_output == 4
    write(tmp_path, NET + "    loss_weight: 1\n")
    ok = ["0.1", "1e-3", "'0.5'", "1", ".inf"]  # PyYAML reads 1e-3 as text: accepted
    for lr in ok:
        solver = write(tmp_path, f"net: net.yaml\nbase_lr: {lr}\n", "s.yaml")
        load_solver(solver)
    for lr, word in [("true", "boolean true"), ("nan", "text 'nan'"), ("'1_000'", "text '1_000'"),
                     ("' 1'", "text ' 1'")]:
        solver = write(tmp_path, f"net: net.yaml\nbase_lr: {lr}\n", "s.yaml")
        err = spec_error(load_solver, solver)
        assert err.line == 2 and err.field == "base_lr" and word in err.message, err


def test_huge_num_output_names_the_layer_line(tmp_path):
    path = write(tmp_path, NET.replace("num_output: 4", "num_output: 1000000000000"))
    assert_error(run("validate", path), path, 11, "inner_product_param.num_output",
                 "1000000000000 is out of range")
