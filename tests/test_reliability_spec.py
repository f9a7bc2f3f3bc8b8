"""Hostile inputs to the YAML loader and the net-spec layer: each is refused quickly with one
message naming the file, the line and the field (or accepted where Caffe accepts it)."""

from __future__ import annotations

import os
import textwrap
import threading
import time
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from netspec.cli import main
from netspec.errors import SpecError
from netspec.log import CaffeLog
from netspec.net import Net
from netspec.solvers import Solver
from netspec.spec import load_net, load_solver, loads_net, yaml_lines
from netspec.spec.overrides import parse_set
from netspec.spec.yaml_lines import MAX_ALIAS_NODES, load_yaml, loads_yaml

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


# -- 3: empty nets, and a trained net must compute a loss ------------------------------------

def build_solver(path):
    """The library's way to a trainable solver: load the file, build the Solver."""
    return Solver(load_solver(path), log=CaffeLog(quiet=True))

def test_empty_net_file_is_an_error(tmp_path):
    path = write(tmp_path, "")
    assert_error(run("validate", path), path, 1, "the net defines no layers", "the file is empty")


def test_net_with_an_empty_layer_list_is_an_error(tmp_path):
    path = write(tmp_path, "name: x\nlayer: []\n")
    assert_error(run("validate", path), path, 2, "layer:", "defines no layers")


def test_solver_with_net_dev_null_is_an_error(tmp_path):
    solver = write(tmp_path, "net: /dev/null\nbase_lr: 0.1\n", "solver.yaml")
    for cmd in ("validate", "train"):
        assert_error(run(cmd, solver), "/dev/null", None, "character device, not a file")


def test_solver_with_an_empty_net_file_does_not_train(tmp_path):
    write(tmp_path, "# nothing yet\n")
    solver = write(tmp_path, "net: net.yaml\nbase_lr: 0.1\nmax_iter: 3\n", "solver.yaml")
    result = run("train", solver, "--quiet")
    assert_error(result, tmp_path / "net.yaml", 1, "defines no layers")


def test_solver_whose_train_net_has_no_loss_is_refused(tmp_path):
    write(tmp_path, NET)
    solver = write(tmp_path, "net: net.yaml\nbase_lr: 0.1\nmax_iter: 3\n", "solver.yaml")
    for cmd in ("validate", "train"):
        assert_error(run(cmd, solver), tmp_path / "net.yaml", 2, "the TRAIN net",
                     f"trained by {solver}", "has no loss", "netspec test")
    # the library entry point says the same
    assert "has no loss" in str(spec_error(build_solver, solver))


def test_solver_whose_train_phase_is_empty_is_refused(tmp_path):
    text = NET.replace("    top: data\n", "    top: data\n    include: {phase: TEST}\n")
    text = text.replace("    top: ip\n", "    top: ip\n    include: {phase: TEST}\n")
    write(tmp_path, text)
    solver = write(tmp_path, "net: net.yaml\nbase_lr: 0.1\n", "solver.yaml")
    assert_error(run("validate", solver), tmp_path / "net.yaml", 2, "the TRAIN net",
                 "is empty", "TRAIN phase")


def test_a_loss_layer_or_a_loss_weight_makes_a_net_trainable(tmp_path):
    solver = write(tmp_path, "net: net.yaml\nbase_lr: 0.1\nmax_iter: 2\nsnapshot_prefix: snap\n",
                   "solver.yaml")  # the snapshot goes beside the solver, in tmp_path
    write(tmp_path, NET + LOSS)
    assert build_solver(solver).net_param.layer[-1].type == "EuclideanLoss"
    assert run("train", solver, "--quiet").exit_code == 0
    write(tmp_path, NET + "    loss_weight: 1\n")  # any top with a weight is a loss
    build_solver(solver)
    # a loss layer weighted 0 is no loss
    write(tmp_path, NET + LOSS + "    loss_weight: 0\n")
    assert "has no loss" in str(spec_error(build_solver, solver))


def test_train_state_stage_decides_which_loss_counts(tmp_path):
    staged = LOSS.replace("    top: loss\n", "    top: loss\n    include: {stage: with_loss}\n")
    write(tmp_path, NET + staged)
    plain = write(tmp_path, "net: net.yaml\nbase_lr: 0.1\n", "plain.yaml")
    with_stage = write(tmp_path, "net: net.yaml\nbase_lr: 0.1\ntrain_state: {stage: with_loss}\n",
                       "staged.yaml")
    assert "has no loss" in str(spec_error(build_solver, plain))
    build_solver(with_stage)


def test_deploy_net_without_a_loss_still_validates_and_runs(tmp_path):
    path = write(tmp_path, NET)
    result = run("validate", path)
    assert result.exit_code == 0, result.output
    net = Net(load_net(path), "TEST")
    net.forward()
    assert net.output_names == ["ip"]


# -- 6: duplicate names (Caffe's rules), booleans and text are not numbers, tags ------------
def test_duplicate_names_without_parameters_are_accepted_as_caffe_does(tmp_path):
    # BVLC's examples/mnist/mnist_autoencoder.prototxt names two loss layers 'loss' in one net;
    # Caffe's Net::Init only maps each name to its last layer (layer_names_index_), no check.
    text = NET + LOSS + """\
  - name: loss
    type: EuclideanLoss
    bottom: [ip, label]
    top: loss2
    loss_weight: 0
"""
    path = write(tmp_path, text)
    assert run("validate", path).exit_code == 0


def test_duplicate_names_with_parameters_are_refused(tmp_path):
    text = NET + """\
  - name: ip
    type: InnerProduct
    bottom: data
    top: ip2
    inner_product_param: {num_output: 2}
"""
    path = write(tmp_path, text)
    assert_error(run("validate", path), path, 12, "two layers with parameters are named 'ip'")


def test_same_name_in_train_and_test_phase_is_fine(tmp_path):
    text = NET.replace("    top: ip\n", "    top: ip\n    include: {phase: TRAIN}\n") + """\
  - name: ip
    type: InnerProduct
    bottom: data
    top: ip
    include: {phase: TEST}
    inner_product_param: {num_output: 4}
"""
    path = write(tmp_path, text)
    assert run("validate", path).exit_code == 0


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
    ok = ["0.1", "1e-3", "'0.5'", "1"]  # PyYAML reads 1e-3 as text: accepted
    for lr in ok:
        solver = write(tmp_path, f"net: net.yaml\nbase_lr: {lr}\n", "s.yaml")
        load_solver(solver)
    for lr, word in [("true", "boolean true"), ("nan", "text 'nan'"), ("'1_000'", "text '1_000'"),
                     ("' 1'", "text ' 1'")]:
        solver = write(tmp_path, f"net: net.yaml\nbase_lr: {lr}\n", "s.yaml")
        err = spec_error(load_solver, solver)
        assert err.line == 2 and err.field == "base_lr" and word in err.message, err


def test_set_values_follow_the_same_rules(tmp_path):
    assert parse_set("base_lr=1e-3") == (["base_lr"], "1e-3")
    write(tmp_path, NET + "    loss_weight: 1\n")
    solver = write(tmp_path, "net: net.yaml\nbase_lr: 0.1\n", "s.yaml")
    result = run("validate", solver, "--set", "layer.ip.inner_product_param.num_output=true")
    assert result.exit_code == 1 and "got the boolean true" in result.output, result.output
    with pytest.raises(SpecError, match="!!binary"):
        parse_set("name=!!binary aGk=")


@pytest.mark.parametrize("text, line, tag", [
    ("layer: !foo\n  - {name: a, type: ReLU}\n", 1, "'!foo' on a list"),
    ("name: x\nlayer:\n  - !!python/object:os.system {name: a}\n", 3,
     "'!!python/object:os.system' on a mapping"),
    ("name: x\nstate: !!set {a, b}\n", 2, "'!!set' on a mapping"),
    ("name: x\nlayer:\n  - !!omap [{name: a}]\n", 3, "'!!omap' on a list"),
    ("name: !!binary aGk=\n", 1, "'!!binary'"),
    ("name: !mine x\n", 1, "'!mine'"),
    ("name: !!python/name:os.system x\n", 1, "'!!python/name:os.system'"),
    ("name: !!timestamp 2001-12-14\n", 1, "'!!timestamp'"),
])
def test_tags_other_than_standard_scalars_are_errors(tmp_path, text, line, tag):
    path = write(tmp_path, text)
    assert_error(run("validate", path), path, line, f"YAML tag {tag}", "not supported")


def test_standard_scalar_tags_and_plain_dates_are_read():
    data, _ = loads_yaml("a: !!str 3\nb: !!int '4'\nc: !!float 1\nd: 2024-01-02\ne: ! 5\n")
    assert data == {"a": "3", "b": 4, "c": 1.0, "d": "2024-01-02", "e": 5}  # '!' as PyYAML


# -- 11: alias bombs, deep nesting, big files --------------------------------------------------
BOMB = ('a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n'
        + "".join(f"{c}: &{c} [{', '.join(['*' + p] * 9)}]\n"
                  for p, c in zip("abcdefgh", "bcdefghi")))


def test_alias_bomb_fails_fast_with_the_limit(tmp_path):
    path = write(tmp_path, BOMB)
    assert len(BOMB) < 600
    t0 = time.perf_counter()
    result = run("validate", path)
    assert time.perf_counter() - t0 < 2.0
    assert_error(result, path, 6, "aliases expand to more than", f"{MAX_ALIAS_NODES:,}",
                 "'*e'")


def test_alias_limit_counts_nodes_not_aliases():
    # 120 aliases of a 1,000-node list: over the limit although there are few aliases
    text = "a: &a [" + ", ".join(["1"] * 999) + "]\n" + "".join(f"k{i}: *a\n" for i in range(120))
    err = spec_error(loads_yaml, text, "f.yaml")
    assert "aliases expand" in err.message and err.line == 2 + MAX_ALIAS_NODES // 1000


def test_aliases_are_independent_copies_with_lines():
    text = """\
        filler: &xavier {type: xavier, std: 0.1}
        layer:
          - name: a
            weight_filler: *xavier
          - name: b
            weight_filler: *xavier
        """
    data, lines = loads_yaml(textwrap.dedent(text))
    a, b = (layer["weight_filler"] for layer in data["layer"])
    assert a == b == {"type": "xavier", "std": 0.1}
    a["std"] = 5  # --set edits the data in place: the other copy must not change
    assert b["std"] == 0.1 and data["filler"]["std"] == 0.1
    assert lines.line(("layer", 1, "weight_filler")) == 6  # the alias's line
    assert lines.line(("layer", 1, "weight_filler", "type")) == 1  # the anchor's


def test_undefined_and_recursive_aliases_are_errors():
    assert "names no anchor" in spec_error(loads_yaml, "a: *nope\n", "f").message
    assert "inside the value it names" in spec_error(loads_yaml, "a: &a [1, *a]\n", "f").message


def test_deep_nesting_is_refused_without_recursion(tmp_path):
    path = write(tmp_path, "layer: " + "[" * 100_000 + "]" * 100_000 + "\n")
    assert_error(run("validate", path), path, 1, "nest more than 100 levels")


def _big_net(n: int) -> str:
    out = ["name: big", "layer:",
           "  - {name: data, type: Input, top: b0, input_param: {shape: {dim: [2, 3]}}}"]
    out += [f"  - name: relu{i}\n    type: ReLU\n    bottom: b{i - 1}\n    top: b{i}"
            for i in range(1, n)]
    return "\n".join(out) + "\n"


@pytest.mark.timeout(60)
def test_large_net_loads_in_linear_work(tmp_path):
    """20,000 layers (1.4 MB) load in about a second; the line map grows by 5 entries a layer
    (the loader visits each node once) and the time about linearly (printed, not asserted)."""
    sizes = {}
    for n in (5_000, 20_000):
        path = write(tmp_path, _big_net(n), f"n{n}.yaml")
        t0 = time.perf_counter()
        _, lines = load_yaml(path)
        net = load_net(path)
        sizes[n] = (time.perf_counter() - t0, len(lines._lines))
        assert len(net.layer) == n
        # root, name, layer; 9 for the Input layer; 5 per ReLU layer (itself and 4 keys)
        assert len(lines._lines) == 3 + 9 + 5 * (n - 1)
    print({n: f"{t:.2f} s, {k} lines" for n, (t, k) in sizes.items()})


def test_file_size_limit_and_its_variable(tmp_path, monkeypatch):
    path = write(tmp_path, NET + "#" * 2000 + "\n")
    monkeypatch.setenv("NETSPEC_MAX_YAML_MB", "0.001")
    err = spec_error(load_yaml, path)
    assert err.file == str(path) and "over the 0.001 MB limit" in err.message
    assert "NETSPEC_MAX_YAML_MB" in err.message
    monkeypatch.setenv("NETSPEC_MAX_YAML_MB", "1")
    load_yaml(path)
    monkeypatch.setenv("NETSPEC_MAX_YAML_MB", "lots")
    assert "expected a size in megabytes" in spec_error(load_yaml, path).message
    monkeypatch.delenv("NETSPEC_MAX_YAML_MB")
    assert yaml_lines.max_file_bytes() == yaml_lines.DEFAULT_MAX_MB * 2**20


# -- 12: lists and mappings as keys ---------------------------------------------------------
@pytest.mark.parametrize("text, line", [
    ("name: x\n[a, b]: 1\n", 2),
    ("name: x\n? {a: 1}\n: 2\n", 2),
    ("name: x\nlayer:\n  - {name: a, type: ReLU, {b: 1}: 2}\n", 3),
    ("a: &k [1]\n*k : 2\n", 2),
])
def test_a_list_or_mapping_as_a_key_is_an_error(tmp_path, text, line):
    path = write(tmp_path, text)
    assert_error(run("validate", path), path, line, "list or mapping", "used as a key")


def test_merge_keys_and_second_documents_are_errors(tmp_path):
    path = write(tmp_path, "x: &x {name: a}\nlayer:\n  - <<: *x\n    type: ReLU\n")
    assert_error(run("validate", path), path, 3, "merge keys ('<<') are not supported")
    path = write(tmp_path, NET + "---\n" + NET)
    assert_error(run("validate", path), path, 12, "more than one YAML document")


# -- 14: special files, encodings, huge shapes ---------------------------------------------
@pytest.mark.timeout(20)
@pytest.mark.parametrize("special", ["/dev/zero", "/dev/urandom", "dir", "fifo"])
def test_only_regular_files_are_read(tmp_path, special):
    if special == "dir":  # named by a solver: the command line itself refuses a directory
        (tmp_path / "d.yaml").mkdir()
        write(tmp_path, "net: d.yaml\nbase_lr: 0.1\n", "solver.yaml")
        path = tmp_path / "d.yaml"
        word = "a directory"
    elif special == "fifo":
        if not hasattr(os, "mkfifo"):
            pytest.skip("no FIFOs here")
        path = tmp_path / "f.yaml"
        os.mkfifo(path)
        word = "a FIFO"
    else:
        if not os.path.exists(special):
            pytest.skip(f"no {special}")
        path, word = Path(special), "a character device"
    done = []
    # a reader that blocked would hang the test: run it on a thread and give it two seconds
    target = tmp_path / "solver.yaml" if special == "dir" else path
    worker = threading.Thread(target=lambda: done.append(run("validate", target)), daemon=True)
    worker.start()
    worker.join(2.0)
    assert done, f"reading {path} blocked"
    assert_error(done[0], path, None, word, "not a file")


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root reads every file")
def test_unreadable_file_is_an_error(tmp_path):
    path = write(tmp_path, NET)
    path.chmod(0)
    assert_error(run("validate", path), path, None, "cannot read the file")


def test_encodings(tmp_path):
    bom = tmp_path / "bom.yaml"
    bom.write_bytes(b"\xef\xbb\xbf" + NET.encode())
    assert run("validate", bom).exit_code == 0  # a UTF-8 byte order mark is skipped
    latin = tmp_path / "latin.yaml"
    latin.write_bytes(NET.replace("tiny", "t\xe9").encode("latin-1"))
    assert_error(run("validate", latin), latin, 1, "not UTF-8", "0xe9", "column 8")
    utf16 = tmp_path / "utf16.yaml"
    utf16.write_bytes(NET.encode("utf-16"))
    assert_error(run("validate", utf16), utf16, 1, "UTF-16")
    nul = tmp_path / "nul.yaml"
    nul.write_bytes(NET.encode().replace(b"    top: ip\n", b"    top: ip\x00\n"))
    assert_error(run("validate", nul), nul, 10, "U+0000", "does not allow")
    tab = write(tmp_path, NET.replace("    top: ip\n", "\ttop: ip\n"), "tab.yaml")
    assert_error(run("validate", tab), tab, 10, "YAML syntax error")


def test_huge_num_output_names_the_layer_line(tmp_path):
    path = write(tmp_path, NET.replace("num_output: 4", "num_output: 1000000000000"))
    assert_error(run("validate", path), path, 11, "inner_product_param.num_output",
                 "1000000000000 is out of range")


@pytest.mark.parametrize("dims, line", [("[100000, 100000, 100000]", 6), ("[46341, 46341]", 6)])
def test_huge_declared_shape_names_the_layer_line(tmp_path, dims, line):
    path = write(tmp_path, NET.replace("[2, 3]", dims))
    assert_error(run("validate", path), path, line, "layer 'data' declares the shape",
                 "a blob holds at most 2,147,483,647")


def test_huge_legacy_input_and_int64_overflow(tmp_path):
    path = write(tmp_path, "input: data\ninput_dim: [100000, 100000, 3, 3]\n"
                           "layer: {name: r, type: ReLU, bottom: data, top: r}\n")
    assert_error(run("validate", path), path, 2, "the legacy input declares the shape")
    path = write(tmp_path, NET.replace("[2, 3]", "[2, 100000000000000000000]"))
    assert_error(run("validate", path), path, 6, "dim[1]", "64-bit")


# -- graph errors name their line --------------------------------------------------------
def test_include_and_exclude_together_name_the_line(tmp_path):
    path = write(tmp_path, NET.replace("    top: ip\n", "    top: ip\n    include: {phase: TRAIN}\n"
                                       "    exclude: {phase: TEST}\n"))
    assert_error(run("validate", path), path, 12, "layer ip.exclude", "both include and exclude")


def test_a_top_listed_twice_says_so(tmp_path):
    path = write(tmp_path, NET.replace("    top: ip\n", "    top: [ip, ip]\n"))
    assert_error(run("validate", path), path, 10, "lists top 'ip' twice")


# -- the Python parser (no libyaml) gives the same answers ----------------------------------
@pytest.mark.parametrize("text, words", [
    (BOMB, ["aliases expand"]),
    ("[a, b]: 1\n", ["used as a key"]),
    ("a: !foo {b: 1}\n", ["'!foo' on a mapping"]),
    ("a: 1\n\x07\n", ["U+0007"]),
    ("a:\n\tb: 1\n", ["YAML syntax error"]),
])
def test_pure_python_parser_gives_the_same_errors(monkeypatch, text, words):
    monkeypatch.setattr(yaml_lines, "_LOADER", yaml.SafeLoader)
    err = spec_error(loads_yaml, text, "f.yaml")
    assert err.file == "f.yaml" and err.line is not None
    for w in words:
        assert w in err.message, err.message
    data, lines = loads_yaml("a: [1, {b: 2}]\n", "f.yaml")
    assert data == {"a": [1, {"b": 2}]} and lines.line(("a", 1, "b")) == 1


def test_libyaml_is_used_when_available():
    if getattr(yaml, "__with_libyaml__", False):
        assert yaml_lines._LOADER is yaml.CSafeLoader
