"""Write the bad net and solver YAML corpus: tests/bad_inputs/net/ and net_cases.tsv.

Run from anywhere: ``python tests/bad_inputs/make_net_corpus.py``. It deletes and rewrites
``net/`` and the manifest; the output is committed, so run it again after changing a case
(tests/test_bad_inputs.py checks that the committed files are what it writes).

Manifest columns (tab-separated, one header line; tests/test_bad_inputs.py reads every
``*cases.tsv`` here):

* ``file``: the bad file, relative to the repository root;
* ``command``: the command line, relative to the repository root, ``{file}`` standing for the
  file; leading ``NAME=value`` words set environment variables;
* ``phrase``: text the one error message must contain;
* ``line``: the line the message must name (``file:LINE:``), empty where there is none;
* ``names``: the file the message must name when it is not ``file`` (a net a solver names).

Each case is cheap (a few small layers, no data source): the whole corpus runs in seconds.
"""

from __future__ import annotations

import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
OUT = HERE / "net"
MANIFEST = HERE / "net_cases.tsv"
REL = "tests/bad_inputs/net"

NET = """\
name: corpus
layer:
  - name: data
    type: Input
    top: data
    input_param: {shape: {dim: [2, 3]}}
  - name: label
    type: Input
    top: label
    input_param: {shape: {dim: [2, 4]}}
  - name: ip
    type: InnerProduct
    bottom: data
    top: ip
    inner_product_param: {num_output: 4}
  - name: loss
    type: EuclideanLoss
    bottom: [ip, label]
    top: loss
"""

SOLVER = """\
net: good_net.yaml
base_lr: 0.01
max_iter: 2
display: 0
"""


@dataclass
class Case:
    name: str
    content: bytes | str | None  # None: the file exists already (a symlink, a folder)
    phrase: str
    line: int | None
    command: str = "netspec validate {file}"
    names: str = ""  # the file the message names when it is not this one


CASES: list[Case] = []


def line_of(text: str, needle: str) -> int:
    """1-based line where ``needle`` starts in ``text``."""
    at = text.index(needle)
    return text.count("\n", 0, at) + 1


def add(name, content, phrase, line, command="netspec validate {file}", names=""):
    CASES.append(Case(name, content, phrase, line, command, names))


def net_variant(name, old, new, phrase, line=None, base=NET, command="netspec validate {file}"):
    """NET with ``old`` replaced by ``new``; the line defaults to the first line that differs."""
    assert old in base, (name, old)
    text = base.replace(old, new, 1)
    if line is None:
        at = base.count("\n", 0, base.index(old)) + 1
        old_lines, new_lines = old.splitlines(), new.splitlines()
        same = 0
        while same < min(len(old_lines), len(new_lines)) and old_lines[same] == new_lines[same]:
            same += 1
        line = at + same
    add(name, text, phrase, line, command)


def solver_variant(name, old, new, phrase, line=None):
    net_variant(name, old, new, phrase, line, base=SOLVER, command="netspec train {file}")


def build() -> None:
    # -- YAML syntax -----------------------------------------------------------------------
    syntax = "YAML syntax error"
    net_variant("syntax_unclosed_flow_map", "{num_output: 4}", "{num_output: 4", syntax, 16)
    net_variant("syntax_unclosed_flow_list", "[ip, label]", "[ip, label", syntax, 19)
    net_variant("syntax_stray_bracket", "    top: ip\n", "    top: [ip]]\n", syntax)
    net_variant("syntax_unclosed_quote", "    top: ip\n", "    top: \"ip\n",
                "quoted scalar that starts on line 14", 20)
    net_variant("syntax_bad_indent", "    type: InnerProduct\n", "      type: InnerProduct\n", syntax)
    net_variant("syntax_tab_indent", "    top: ip\n", "\ttop: ip\n", syntax)
    net_variant("syntax_two_colons", "    top: ip\n", "    top: ip: x\n", syntax)
    net_variant("syntax_missing_space", "    top: ip\n", "    top:ip\n    bottom:: x\n", syntax, 15)
    net_variant("syntax_item_in_mapping", "    top: ip\n", "    top: ip\n    - x\n", syntax)
    net_variant("syntax_unindented_item", "  - name: loss\n", "- name: loss\n", syntax)
    net_variant("syntax_bad_escape", "    top: ip\n", "    top: \"i\\qp\"\n", syntax)
    net_variant("syntax_directive_late", "    top: ip\n", "    top: ip\n%YAML 1.1\n", syntax, 16)
    net_variant("syntax_flow_comma", "[ip, label]", "[ip,, label]", syntax)
    net_variant("syntax_block_scalar_indent", "    top: ip\n", "    top: |\n  ip\n", syntax, 16)
    net_variant("syntax_anchor_no_value", "    top: ip\n", "    top: &\n", syntax)
    add("syntax_only_closing.yaml", "]\n", syntax, 1)
    add("syntax_percent.yaml", "%\n", syntax, 1)
    net_variant("duplicate_key", "    top: ip\n", "    top: ip\n    top: ip2\n", "duplicate key 'top'",
                15)
    net_variant("duplicate_key_flow", "{num_output: 4}", "{num_output: 4, num_output: 5}",
                "duplicate key 'num_output'")
    net_variant("duplicate_top_level_key", "name: corpus\n", "name: corpus\nname: again\n",
                "duplicate key 'name'", 2)
    add("two_documents.yaml", NET + "---\n" + NET, "more than one YAML document",
        NET.count("\n") + 1)

    # -- tags ------------------------------------------------------------------------------
    net_variant("tag_local_on_mapping", "  - name: ip\n", "  - !layer\n    name: ip\n",
                "YAML tag '!layer' on a mapping", 11)
    net_variant("tag_local_on_list", "layer:\n", "layer: !layers\n", "YAML tag '!layers' on a list", 2)
    net_variant("tag_python_object", "{num_output: 4}", "!!python/object:os.system {num_output: 4}",
                "'!!python/object:os.system' on a mapping")
    net_variant("tag_python_object_apply", "[ip, label]", "!!python/object/apply:os.system [ls]",
                "'!!python/object/apply:os.system' on a list")
    net_variant("tag_python_name", "    top: ip\n", "    top: !!python/name:os.system ip\n",
                "'!!python/name:os.system'")
    net_variant("tag_python_tuple", "[ip, label]", "!!python/tuple [ip, label]",
                "'!!python/tuple' on a list")
    net_variant("tag_set", "{num_output: 4}", "!!set {num_output}", "'!!set' on a mapping")
    net_variant("tag_omap", "[ip, label]", "!!omap [a: 1]", "'!!omap' on a list")
    net_variant("tag_pairs", "[ip, label]", "!!pairs [a: 1]", "'!!pairs' on a list")
    net_variant("tag_binary", "    top: ip\n", "    top: !!binary aXA=\n", "'!!binary'")
    net_variant("tag_timestamp", "    top: ip\n", "    top: !!timestamp 2001-12-14\n", "'!!timestamp'")
    net_variant("tag_verbatim", "    top: ip\n", "    top: !<tag:example.com,2000:x> ip\n",
                "'tag:example.com,2000:x'")
    net_variant("tag_handle", "name: corpus\n", "%TAG !e! tag:example.com,2000:\n---\nname: !e!n corpus\n",
                "'tag:example.com,2000:n'", 3)
    net_variant("tag_on_root", "name: corpus\n", "--- !net\nname: corpus\n", "'!net' on a mapping", 1)
    net_variant("tag_on_key", "    top: ip\n", "    !k top: ip\n", "YAML tag '!k'")
    net_variant("tag_bad_int", "num_output: 4", "num_output: !!int four", "'four' is not a valid !!int")
    net_variant("tag_bad_float", "num_output: 4", "num_output: !!float x", "'x' is not a valid !!float")
    net_variant("tag_bad_bool", "    top: ip\n", "    top: !!bool maybe\n", "'maybe' is not a valid !!bool")
    net_variant("tag_custom_scalar_in_list", "[ip, label]", "[ip, !lbl label]", "YAML tag '!lbl'")

    # -- aliases: bombs, recursion, undefined, merge keys -------------------------------------
    bomb = ('lol: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n'
            + "".join(f"{c}: &{c} [{', '.join(['*' + p] * 9)}]\n"
                      for p, c in zip("abcdefgh", "bcdefghi")))
    add("alias_bomb_billion_laughs.yaml", bomb, "aliases expand to more than", 6)
    wide = "x: &x [" + ", ".join(["0"] * 2000) + "]\n" + "".join(f"k{i}: *x\n" for i in range(60))
    add("alias_bomb_wide.yaml", wide, "aliases expand to more than", 51)
    nested = "a: &a {x: 1, y: 1, z: 1, w: 1}\n" + "".join(
        f"{c}: &{c} {{p: *{p}, q: *{p}, r: *{p}, s: *{p}, t: *{p}, u: *{p}}}\n"
        for p, c in zip("abcdefg", "bcdefgh"))
    add("alias_bomb_mappings.yaml", nested, "aliases expand to more than", 7)
    add("alias_bomb_then_net.yaml", bomb + NET, "aliases expand to more than", 6)
    add("alias_undefined.yaml", NET.replace("[ip, label]", "*inputs"), "names no anchor", 18)
    add("alias_recursive.yaml", "a: &a [1, {b: *a}]\n", "inside the value it names", 1)
    add("alias_deep_chain.yaml", "a: &a " + "[" * 60 + "]" * 60 + "\nb: " + "[" * 41 + "*a" + "]" * 41 + "\n",
        "nest more than 100 levels", 2)
    add("merge_key.yaml", NET.replace("  - name: ip\n", "  - <<: {name: ip}\n"), "merge keys ('<<')", 11)
    add("merge_key_alias.yaml", "base: &b {type: ReLU}\n" + NET.replace("    type: InnerProduct\n",
        "    <<: *b\n"), "merge keys ('<<')", 13)
    add("nesting_deep_lists.yaml", "layer: " + "[" * 5000 + "]" * 5000 + "\n", "nest more than 100 levels", 1)
    add("nesting_deep_maps.yaml", "layer: " + "{a: " * 300 + "1" + "}" * 300 + "\n",
        "nest more than 100 levels", 1)

    # -- keys that are lists or mappings --------------------------------------------------------
    key = "used as a key"
    net_variant("key_flow_list", "    top: ip\n", "    [top, x]: ip\n", key, 14)
    net_variant("key_flow_map", "    top: ip\n", "    {top: 1}: ip\n", key, 14)
    net_variant("key_complex_block", "    top: ip\n", "    ? [top]\n    : ip\n", key, 14)
    net_variant("key_in_flow_mapping", "{num_output: 4}", "{[num_output]: 4}", key)
    add("key_alias_to_list.yaml", "k: &k [a]\n" + NET.replace("    top: ip\n", "    *k : ip\n"), key, 15)
    add("key_at_top_level.yaml", "[name, x]: corpus\n", key, 1)
    add("key_solver.yaml", "? [net]\n: good_net.yaml\nbase_lr: 0.1\n", key, 1, "netspec train {file}")

    # -- unknown fields --------------------------------------------------------------------
    net_variant("unknown_top_level", "name: corpus\n", "name: corpus\nlayers: []\n", "unknown key 'layers'", 2)
    net_variant("unknown_layer_key", "    top: ip\n", "    tops: ip\n", "unknown key 'tops'")
    net_variant("unknown_param_key", "num_output: 4", "num_outputs: 4", "unknown key 'num_outputs'")
    net_variant("unknown_filler_key", "num_output: 4", "num_output: 4, weight_filler: {typ: xavier}",
                "unknown key 'typ'")
    net_variant("unknown_shape_key", "{dim: [2, 3]}", "{dims: [2, 3]}", "unknown key 'dims'")
    net_variant("unknown_param_block", "    inner_product_param:", "    inner_product_params:",
                "unknown key 'inner_product_params'")
    net_variant("unknown_rule_key", "    top: ip\n", "    top: ip\n    include: {phases: TRAIN}\n",
                "unknown key 'phases'")
    net_variant("unknown_state_key", "name: corpus\n", "name: corpus\nstate: {phase: TRAIN, levels: 1}\n",
                "unknown key 'levels'", 2)
    net_variant("unknown_paramspec_key", "    top: ip\n", "    top: ip\n    param: {lr_multi: 1}\n",
                "unknown key 'lr_multi'")
    net_variant("unknown_key_number", "    top: ip\n", "    top: ip\n    3: x\n", "unknown key '3'")
    net_variant("unknown_key_null", "    top: ip\n", "    top: ip\n    ~: x\n", "unknown key 'null'")
    solver_variant("solver_unknown_key", "base_lr: 0.01\n", "base_lr: 0.01\nbase_rl: 0.1\n",
                   "unknown key 'base_rl'")
    solver_variant("solver_unknown_key_typo_lr_policy", "base_lr: 0.01\n", "base_lr: 0.01\nlr_polcy: step\n",
                   "unknown key 'lr_polcy'")

    # -- wrong types: booleans and text are not numbers ------------------------------------------
    boolean = "got the boolean"
    for field, old, new in [
        ("num_output", "num_output: 4", "num_output: true"),
        ("num_output_yes", "num_output: 4", "num_output: yes"),
        ("num_output_off", "num_output: 4", "num_output: off"),
        ("dim", "dim: [2, 3]", "dim: [2, true]"),
        ("dim_scalar", "dim: [2, 3]", "dim: false"),
        ("kernel_size", "inner_product_param: {num_output: 4}",
         "convolution_param: {num_output: 4, kernel_size: true}"),
        ("axis", "num_output: 4", "num_output: 4, axis: true"),
        ("bias_filler_std", "num_output: 4", "num_output: 4, bias_filler: {type: gaussian, std: true}"),
        ("loss_weight", "    top: loss\n", "    top: loss\n    loss_weight: true\n"),
        ("lr_mult", "    top: ip\n", "    top: ip\n    param: {lr_mult: true}\n"),
        ("decay_mult_list", "    top: ip\n",
         "    top: ip\n    param: [{decay_mult: 1}, {decay_mult: false}]\n"),
        ("state_level", "name: corpus\n", "name: corpus\nstate: {level: true}\n"),
        ("include_min_level", "    top: ip\n", "    top: ip\n    include: {min_level: true}\n"),
    ]:
        if field == "kernel_size":
            net_variant(f"bool_for_{field}", old, new, boolean,
                        base=NET.replace("type: InnerProduct", "type: Convolution"))
        else:
            net_variant(f"bool_for_{field}", old, new, boolean)
    text_num = "got the text"
    for field, old, new in [
        ("num_output_quoted", "num_output: 4", "num_output: '4'"),
        ("num_output_word", "num_output: 4", "num_output: four"),
        ("num_output_exponent", "num_output: 4", "num_output: 4e0"),
        ("dim_quoted", "dim: [2, 3]", "dim: [2, \"3\"]"),
        ("std_nan_text", "num_output: 4", "num_output: 4, weight_filler: {type: gaussian, std: nan}"),
        ("std_underscore", "num_output: 4", "num_output: 4, weight_filler: {type: gaussian, std: '1_0.5'}"),
        ("loss_weight_word", "    top: loss\n", "    top: loss\n    loss_weight: heavy\n"),
    ]:
        net_variant(f"text_for_{field}", old, new, text_num)
    net_variant("float_for_int", "num_output: 4", "num_output: 4.5", "fractional part")
    net_variant("list_for_int", "num_output: 4", "num_output: [4, 5]", "valid integer")
    net_variant("mapping_for_int", "num_output: 4", "num_output: {n: 4}", "valid integer")
    net_variant("mapping_for_string", "    top: ip\n", "    top: {name: ip}\n", "valid string")
    net_variant("number_for_name", "  - name: ip\n", "  - name: 5\n", "valid string")
    net_variant("null_for_required_name", "  - name: ip\n", "  - name: ~\n", "valid string")
    net_variant("missing_type", "    type: InnerProduct\n", "", "required field 'type' is missing", 11)
    net_variant("int_out_of_int32", "num_output: 4", "num_output: 3000000000", "out of range")
    net_variant("negative_out_of_int32", "    top: ip\n",
                "    top: ip\n    include: {min_level: -3000000000}\n",
                "out of range")
    net_variant("layer_is_a_string",
                "  - name: data\n    type: Input\n    top: data\n    input_param: {shape: {dim: [2, 3]}}\n",
                "  - data\n", "valid dictionary", 3)
    add("root_is_a_list.yaml", "- name: a\n  type: ReLU\n", "must be a YAML mapping", 1)
    add("root_is_a_scalar.yaml", "just text\n", "must be a YAML mapping", 1)
    add("root_is_null.yaml", "~\n", "must be a YAML mapping", 1)
    for field, new, phrase in [
        ("base_lr_bool", "base_lr: true", "got the boolean true"),
        ("base_lr_text", "base_lr: fast", "got the text 'fast'"),
        ("base_lr_nan_text", "base_lr: nan", "got the text 'nan'"),
        ("max_iter_bool", "max_iter: yes", "got the boolean true"),
        ("max_iter_text", "max_iter: '2'", "got the text '2'"),
        ("max_iter_exponent", "max_iter: 1e4", "got the text '1e4'"),
        ("max_iter_float", "max_iter: 2.5", "fractional part"),
        ("max_iter_huge", "max_iter: 99999999999", "out of range"),
        ("momentum_bool", "momentum: on", "got the boolean true"),
        ("test_iter_bool_list", "test_iter: [1, false]", "got the boolean false"),
        ("stepvalue_text", "stepvalue: [10, x]", "got the text 'x'"),
        ("random_seed_huge", "random_seed: 100000000000000000000", "64-bit"),
    ]:
        key_name = new.split(":")[0]
        if key_name in SOLVER:
            old = next(line for line in SOLVER.splitlines(keepends=True) if line.startswith(key_name + ":"))
            solver_variant(f"solver_{field}", old, new + "\n", phrase)
        else:
            solver_variant(f"solver_{field}", "base_lr: 0.01\n", "base_lr: 0.01\n" + new + "\n", phrase)
    solver_variant("solver_bad_enum", "base_lr: 0.01\n", "base_lr: 0.01\nlr_policy: stepwise\n",
                   "'stepwise' is not a valid value")
    solver_variant("solver_syntax_error", "base_lr: 0.01\n", "base_lr: [0.01\n", "YAML syntax error", 3)
    solver_variant("solver_tag", "base_lr: 0.01\n", "base_lr: !!python/object:float 0.01\n",
                   "'!!python/object:float'")
    solver_variant("solver_tag_on_mapping", "net: good_net.yaml\n",
                   "net: good_net.yaml\ntrain_state: !st {level: 1}\n",
                   "'!st' on a mapping")
    add("solver_alias_bomb.yaml", bomb.replace("lol:", "net: good_net.yaml\nbase_lr: 0.1\nlol:"),
        "aliases expand to more than", 8, "netspec train {file}")
    solver_variant("solver_duplicate_key", "base_lr: 0.01\n", "base_lr: 0.01\nbase_lr: 0.02\n",
                   "duplicate key 'base_lr'")
    add("solver_two_documents.yaml", SOLVER + "---\n" + SOLVER, "more than one YAML document", 5,
        "netspec train {file}")
    add("solver_root_list.yaml", "- net: good_net.yaml\n", "must be a YAML mapping", 1, "netspec train {file}")

    # -- empty and degenerate nets -----------------------------------------------------------
    empty = "the net defines no layers"
    add("empty_file.yaml", "", empty, 1)
    add("empty_comments_only.yaml", "# a net\n# nothing here\n", empty, 1)
    add("empty_document_marker.yaml", "---\n", empty, 1)
    add("empty_name_only.yaml", "name: nothing\n", empty, 1)
    add("empty_layer_list.yaml", "name: x\nlayer: []\n", empty, 2)
    add("empty_layer_null.yaml", "name: x\nlayer:\n", empty, 2)
    add("empty_with_state.yaml", "name: x\nstate: {phase: TEST}\n", empty, 1)
    add("solver_net_empty_file.yaml", "net: empty_file.yaml\nbase_lr: 0.1\n", empty, 1,
        "netspec train {file}", "empty_file.yaml")
    add("solver_validate_net_empty.yaml", "net: empty_layer_list.yaml\nbase_lr: 0.1\n", empty, 2,
        "netspec validate {file}", "empty_layer_list.yaml")
    add("solver_net_without_loss.yaml", "net: no_loss_net.yaml\nbase_lr: 0.1\n", "has no loss", 2,
        "netspec train {file}", "no_loss_net.yaml")
    add("solver_validate_net_without_loss.yaml", "net: no_loss_net.yaml\nbase_lr: 0.1\n", "has no loss",
        2, "netspec validate {file}", "no_loss_net.yaml")
    add("solver_loss_weight_zero.yaml", "net: zero_loss_net.yaml\nbase_lr: 0.1\n", "has no loss", 2,
        "netspec train {file}", "zero_loss_net.yaml")
    add("solver_train_phase_empty.yaml", "net: test_only_net.yaml\nbase_lr: 0.1\n", "is empty", 2,
        "netspec train {file}", "test_only_net.yaml")
    add("solver_train_stage_has_no_loss.yaml",
        "net: staged_loss_net.yaml\nbase_lr: 0.1\ntrain_state: {stage: [other]}\n", "has no loss", 2,
        "netspec train {file}", "staged_loss_net.yaml")
    add("solver_names_no_net.yaml", "base_lr: 0.1\n", "names no network", 1, "netspec train {file}")
    add("solver_net_missing.yaml", "net: no_such_net.yaml\nbase_lr: 0.1\n", "file not found", None,
        "netspec train {file}", "no_such_net.yaml")

    # -- the graph: bottoms, tops, names, phases ---------------------------------------------
    net_variant("missing_bottom", "    bottom: data\n", "    bottom: dta\n", "reads bottom 'dta'")
    net_variant("missing_bottom_in_list", "[ip, label]", "[ip, labels]", "reads bottom 'labels'")
    net_variant("bottom_from_later_layer", "    bottom: data\n", "    bottom: loss\n", "reads bottom 'loss'")
    net_variant("bottom_from_other_phase", "    top: label\n", "    top: label\n    include: {phase: TEST}\n",
                "reads bottom 'label'", 19)
    net_variant("duplicate_top", "    top: ip\n", "    top: label\n", "already produced")
    net_variant("top_listed_twice", "    top: ip\n", "    top: [ip, ip]\n", "lists top 'ip' twice")
    net_variant("duplicate_name_with_params", "  - name: loss\n    type: EuclideanLoss\n",
                "  - name: ip\n    type: InnerProduct\n    bottom: data\n    top: ip2\n"
                "    inner_product_param: {num_output: 4}\n  - name: loss\n    type: EuclideanLoss\n",
                "two layers with parameters are named 'ip'")
    net_variant("include_and_exclude", "    top: ip\n",
                "    top: ip\n    include: {phase: TRAIN}\n    exclude: {phase: TEST}\n",
                "both include and exclude", 16)
    net_variant("bad_phase_in_include", "    top: ip\n", "    top: ip\n    include: {phase: TRAINING}\n",
                "'TRAINING' is not a valid value")
    net_variant("bad_phase_lowercase", "    top: ip\n", "    top: ip\n    phase: train\n",
                "'train' is not a valid value")
    net_variant("bad_phase_number", "    top: ip\n", "    top: ip\n    include: {phase: 0}\n",
                "is not a valid value")
    net_variant("bad_state_phase", "name: corpus\n", "name: corpus\nstate: {phase: DEPLOY}\n",
                "'DEPLOY' is not a valid value", 2)
    net_variant("unknown_layer_type", "type: InnerProduct", "type: InnerProdcut", "unknown layer type")
    net_variant("unknown_layer_type_lowercase", "type: EuclideanLoss", "type: euclideanloss",
                "unknown layer type")
    net_variant("block_for_other_type", "    inner_product_param: {num_output: 4}\n",
                "    inner_product_param: {num_output: 4}\n    convolution_param: {num_output: 4}\n",
                "does not read 'convolution_param'")
    net_variant("too_many_loss_weights", "    top: loss\n", "    top: loss\n    loss_weight: [1, 1]\n",
                "2 loss_weight values for 1 tops")
    net_variant("propagate_down_count", "    top: loss\n", "    top: loss\n    propagate_down: [true]\n",
                "propagate_down has 1 entries", 17)
    net_variant("input_shape_count", "input_param: {shape: {dim: [2, 3]}}",
                "input_param: {shape: [{dim: [2, 3]}, {dim: [1]}]}", "gives 2 shapes for 1 tops", 4)
    net_variant("legacy_input_without_shape", "name: corpus\n", "name: corpus\ninput: extra\n",
                "needs input_shape or input_dim", 2)
    net_variant("legacy_input_dim_count", "name: corpus\n",
                "name: corpus\ninput: extra\ninput_dim: [1, 2, 3]\n",
                "4 values per input", 3)
    net_variant("inner_product_bad_axis", "num_output: 4", "num_output: 4, axis: 5", "axis 5 out of range", 12)
    # fork layers: too few bottoms, a field of the wrong type
    net_variant("fork_layer_missing_bottom", "    type: EuclideanLoss\n    bottom: [ip, label]\n",
                "    type: Yolov3\n    bottom: [ip]\n",
                "takes exactly 2 bottom blob(s), got 1", 17)
    net_variant("fork_prior_box_missing_image_bottom",
                "    type: EuclideanLoss\n    bottom: [ip, label]\n    top: loss\n",
                "    type: PriorBox\n    bottom: [ip]\n    top: loss\n"
                "    prior_box_param: {min_size: 4}\n", "takes exactly 2 bottom blob(s), got 1", 17)
    net_variant("fork_field_wrong_type_yaml", "    type: EuclideanLoss\n    bottom: [ip, label]\n",
                "    type: Yolov3\n    bottom: [ip, label]\n    yolov3_param: {num_class: twenty}\n",
                "yolov3_param.num_class: expected an integer", 19)

    # -- huge shapes -------------------------------------------------------------------------
    net_variant("huge_num_output", "num_output: 4", "num_output: 1000000000000", "out of range")
    net_variant("huge_num_output_exponent", "num_output: 4", "num_output: 1e12", "got the text '1e12'")
    net_variant("huge_input_shape", "dim: [2, 3]", "dim: [100000, 100000, 100000]",
                "declares the shape", 6)
    net_variant("huge_input_shape_just_over", "dim: [2, 3]", "dim: [46341, 46341]", "declares the shape", 6)
    net_variant("huge_dim_int64", "dim: [2, 3]", "dim: [2, 100000000000000000000]", "64-bit")
    net_variant("huge_legacy_input_dim", "name: corpus\n",
                "name: corpus\ninput: extra\ninput_dim: [100000, 100000, 100, 1]\n", "declares the shape", 3)
    net_variant("huge_legacy_input_shape", "name: corpus\n",
                "name: corpus\ninput: extra\ninput_shape: {dim: [100000, 100000, 100]}\n",
                "declares the shape", 3)
    net_variant("huge_dummy_data", "  - name: ip\n",
                "  - name: dummy\n    type: DummyData\n    top: dummy\n"
                "    dummy_data_param: {shape: {dim: [65536, 65536]}}\n  - name: ip\n",
                "declares the shape", 14)
    net_variant("huge_parameter_layer", "  - name: ip\n",
                "  - name: param\n    type: Parameter\n    top: p\n"
                "    parameter_param: {shape: {dim: [3000000000]}}\n  - name: ip\n",
                "declares the shape", 14)

    # -- special files, folders, links ---------------------------------------------------------
    add("link_to_dev_zero.yaml", None, "character device, not a file", None)
    add("link_to_dev_urandom.yaml", None, "character device, not a file", None)
    add("link_to_dev_null.yaml", None, "character device, not a file", None)
    add("link_dangling.yaml", None, "file not found", None)
    add("solver_net_dev_zero.yaml", "net: /dev/zero\nbase_lr: 0.1\n", "character device", None,
        "netspec train {file}", "/dev/zero")
    add("solver_net_dev_null.yaml", "net: /dev/null\nbase_lr: 0.1\n", "character device", None,
        "netspec train {file}", "/dev/null")
    add("solver_validate_dev_zero.yaml", "net: /dev/zero\nbase_lr: 0.1\n", "character device", None,
        "netspec validate {file}", "/dev/zero")
    add("solver_net_directory.yaml", "net: a_folder.yaml\nbase_lr: 0.1\n", "a directory, not a file",
        None, "netspec train {file}", "a_folder.yaml")
    add("solver_test_net_dev_zero.yaml", "net: good_net.yaml\ntest_net: /dev/zero\ntest_iter: 1\n"
        "test_interval: 1\nbase_lr: 0.1\n", "character device", None, "netspec validate {file}", "/dev/zero")

    # -- encodings and characters -------------------------------------------------------------
    add("latin1_bytes.yaml", NET.replace("corpus", "corpus\xe9").encode("latin-1"), "not UTF-8 text", 1)
    add("invalid_utf8_middle.yaml", NET.encode().replace(b"    top: ip\n", b"    top: i\xffp\n"),
        "byte 0xff", 14)
    add("overlong_utf8.yaml", NET.encode().replace(b"    top: ip\n", b"    top: \xc0\xafip\n"),
        "not UTF-8 text", 14)
    add("surrogate_utf8.yaml", NET.encode().replace(b"    top: ip\n", b"    top: \xed\xa0\x80ip\n"),
        "not UTF-8 text", 14)
    add("truncated_utf8.yaml", NET.encode() + b"# \xe2\x82", "not UTF-8 text", 20)
    add("utf16_le_bom.yaml", b"\xff\xfe" + NET.encode("utf-16-le"), "UTF-16", 1)
    add("utf16_be_bom.yaml", b"\xfe\xff" + NET.encode("utf-16-be"), "UTF-16", 1)
    add("bom_then_error.yaml", b"\xef\xbb\xbf" + NET.replace("num_output: 4", "num_output: true").encode(),
        "got the boolean true", 15)
    add("nul_byte.yaml", NET.encode().replace(b"    top: ip\n", b"    top: ip\x00\n"), "U+0000", 14)
    add("bell_character.yaml", NET.replace("    top: ip\n", "    top: ip\x07\n"), "U+0007", 14)
    add("escape_character.yaml", NET.replace("    top: ip\n", "    top: \x1b[31mip\n"), "U+001B", 14)
    add("del_character.yaml", NET.replace("    top: ip\n", "    top: ip\x7f\n"), "U+007F", 14)
    add("binary_garbage.yaml", bytes(range(256)) * 4, "not UTF-8 text", 2)
    add("binary_ascii_controls.yaml", bytes(range(32)) * 4, "U+0000", 1)
    add("tabs_everywhere.yaml", NET.replace("    ", "\t"), "YAML syntax error", 4)
    add("crlf_then_error.yaml", NET.replace("num_output: 4", "num_output: yes").replace("\n", "\r\n"),
        "got the boolean true", 15)
    add("cr_only_then_error.yaml", NET.replace("num_output: 4", "num_output: yes").replace("\n", "\r"),
        "got the boolean true", 15)

    # -- size limit ---------------------------------------------------------------------------
    big = NET + "".join(f"# padding line {i:05d} to make the file larger than the limit\n" for i in range(400))
    add("over_size_limit.yaml", big, "over the 0.01 MB limit", None,
        "NETSPEC_MAX_YAML_MB=0.01 netspec validate {file}")
    add("solver_net_over_size_limit.yaml", "net: over_size_limit.yaml\nbase_lr: 0.1\n", "NETSPEC_MAX_YAML_MB",
        None, "NETSPEC_MAX_YAML_MB=0.01 netspec train {file}", "over_size_limit.yaml")
    add("size_limit_variable_bad.yaml", NET, "expected a size in megabytes", None,
        "NETSPEC_MAX_YAML_MB=lots netspec validate {file}", "NETSPEC_MAX_YAML_MB")


HELPERS = {
    # files the cases name, not cases themselves
    "good_net.yaml": NET,
    "no_loss_net.yaml": NET.split("  - name: loss\n")[0].replace("name: corpus\n", "name: deploy\n"),
    "zero_loss_net.yaml": NET + "    loss_weight: 0\n",
    "test_only_net.yaml": NET.replace("    top: data\n", "    top: data\n    include: {phase: TEST}\n")
    .replace("    top: label\n", "    top: label\n    include: {phase: TEST}\n")
    .replace("    top: ip\n", "    top: ip\n    include: {phase: TEST}\n")
    .replace("    top: loss\n", "    top: loss\n    include: {phase: TEST}\n"),
    "staged_loss_net.yaml": NET + "    include: {stage: with_loss}\n",
}
LINKS = {
    "link_to_dev_zero.yaml": "/dev/zero",
    "link_to_dev_urandom.yaml": "/dev/urandom",
    "link_to_dev_null.yaml": "/dev/null",
    "link_dangling.yaml": "no_such_target.yaml",
}


def main(argv: list[str]) -> None:
    out, manifest = OUT, MANIFEST
    if argv[:1] == ["--out"] and len(argv) == 2:  # a scratch copy, to compare with the committed one
        out, manifest = Path(argv[1]) / "net", Path(argv[1]) / "net_cases.tsv"
    elif argv:
        raise SystemExit("usage: make_net_corpus.py [--out DIR]")
    build()
    names = [c.name if c.name.endswith(".yaml") else c.name + ".yaml" for c in CASES]
    assert len(set(names)) == len(names), "case names repeat"
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    for name, text in HELPERS.items():
        (out / name).write_text(text)
    folder = out / "a_folder.yaml"
    folder.mkdir()
    (folder / "README").write_text("A folder named like a net file: a solver that names it is refused.\n")
    rows = ["file\tcommand\tphrase\tline\tnames"]
    for case, name in zip(CASES, names):
        path = out / name
        if name in LINKS:
            path.symlink_to(LINKS[name])
        else:
            data = case.content.encode() if isinstance(case.content, str) else case.content
            path.write_bytes(data)
        assert "\t" not in case.phrase and "\n" not in case.phrase
        rows.append("\t".join([f"{REL}/{name}", case.command, case.phrase,
                               "" if case.line is None else str(case.line), case.names]))
    manifest.write_text("\n".join(rows) + "\n")
    print(f"{len(CASES)} cases in {out}, manifest {manifest}")


if __name__ == "__main__":
    main(sys.argv[1:])
