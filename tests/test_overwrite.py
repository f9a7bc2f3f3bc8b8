"""``netspec convert`` and ``netspec export`` never overwrite a file netspec did not write, or one
changed since netspec wrote it, unless ``--force`` is given; when any output would be refused,
nothing at all is written.

Text outputs (YAML, prototxt) carry netspec's header with a checksum of the rest of the file, so
re-running a conversion replaces its own unchanged output; binary outputs (.npz, .caffemodel)
are never replaced without ``--force``.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("google.protobuf",
                    reason="protobuf is not installed (pip install 'netspec[caffe]')")

from click.testing import CliRunner  # noqa: E402

from netspec.backend import Backend  # noqa: E402
from netspec.caffe import ConvertError  # noqa: E402
from netspec.caffe.export import export_net  # noqa: E402
from netspec.caffe.outputs import OverwriteError, is_own_unchanged  # noqa: E402
from netspec.caffe.port import convert  # noqa: E402
from netspec.cli import main  # noqa: E402
from netspec.errors import NetspecError  # noqa: E402
from netspec.net import Net  # noqa: E402
from netspec.snapshot import load_npz, load_weights  # noqa: E402
from netspec.spec import load_net  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
G = Path(__file__).parent / "golden" / "caffe"
ZOO, TRAINED = G / "zoo", G / "lenet_trained"
SOLVER = ZOO / "BVLC__caffe__examples__mnist__lenet_solver.prototxt"
TRAIN_TEST = ZOO / "BVLC__caffe__examples__mnist__lenet_train_test.prototxt"
DEPLOY = TRAINED / "lenet.prototxt"
CAFFEMODEL = TRAINED / "lenet_iter_10000.caffemodel"
HAND_YAML = b"# my own LeNet, edited by hand\nname: LeNet\nlayer: []\n"


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def cli(*args, cwd=None):
    """The real command line, in a subprocess, running this checkout."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-m", "netspec.cli", *map(str, args)], cwd=cwd,
                          env=env, capture_output=True, text=True, timeout=300, check=False)


def state(*paths: Path) -> dict:
    """What each path is now: absent, or (inode, bytes). atomic_write_bytes replaces the file
    (a new inode), so an unchanged state means nothing was written, even the same bytes."""
    return {p: (os.stat(p).st_ino, p.read_bytes()) if p.exists() else None for p in paths}


@pytest.fixture
def solver_dir(tmp_path) -> Path:
    (tmp_path / "lenet_solver.prototxt").write_bytes(SOLVER.read_bytes())
    (tmp_path / "lenet_train_test.prototxt").write_bytes(TRAIN_TEST.read_bytes())
    return tmp_path


@pytest.fixture
def deploy_yaml(tmp_path) -> Path:
    out = tmp_path / "lenet.yaml"
    r = invoke("convert", DEPLOY, "-o", out)
    assert r.exit_code == 0, r.output
    return out


# -- convert: YAML ---------------------------------------------------------------------------------
def test_hand_written_yaml_beside_a_solver_is_kept_and_nothing_is_written(solver_dir):
    net_yaml = solver_dir / "lenet_train_test.yaml"
    net_yaml.write_bytes(HAND_YAML)
    solver_yaml = solver_dir / "lenet_solver.yaml"
    r = cli("convert", solver_dir / "lenet_solver.prototxt")
    assert r.returncode != 0
    assert f"{net_yaml}: not overwritten: netspec did not write it" in r.stderr, r.stderr
    assert "--force" in r.stderr and "Nothing was written" in r.stderr
    assert net_yaml.read_bytes() == HAND_YAML
    assert not solver_yaml.exists()                     # the other output is not written either
    assert sorted(p.name for p in solver_dir.iterdir()) == [
        "lenet_solver.prototxt", "lenet_train_test.prototxt", "lenet_train_test.yaml"]
    # --force overwrites it
    r = cli("convert", solver_dir / "lenet_solver.prototxt", "--force")
    assert r.returncode == 0, r.stderr
    assert net_yaml.read_bytes().startswith(
        b"# Converted by `netspec convert` from lenet_train_test")
    assert solver_yaml.exists()


def test_rerun_replaces_its_own_output_but_not_an_edited_one(solver_dir):
    net_yaml = solver_dir / "lenet_train_test.yaml"
    solver_yaml = solver_dir / "lenet_solver.yaml"
    src = solver_dir / "lenet_solver.prototxt"
    assert invoke("convert", src).exit_code == 0
    first = state(net_yaml, solver_yaml)
    r = invoke("convert", src)                           # the same conversion again: fine
    assert r.exit_code == 0, r.output
    again = state(net_yaml, solver_yaml)
    assert {p: b for p, (_, b) in again.items()} == {p: b for p, (_, b) in first.items()}
    assert all(again[p][0] != first[p][0] for p in again)   # both were written again
    # edited by hand since: refused, and the solver YAML is not written either
    edited = net_yaml.read_bytes() + b"# my note\n"
    net_yaml.write_bytes(edited)
    before = state(net_yaml, solver_yaml)
    r = invoke("convert", src)
    assert r.exit_code == 1
    assert f"{net_yaml}: not overwritten: it was changed since netspec wrote it" in r.output
    assert "--force" in r.output
    assert state(net_yaml, solver_yaml) == before
    # the same for the solver YAML itself
    net_yaml.write_bytes(first[net_yaml][1])
    solver_yaml.write_bytes(solver_yaml.read_bytes().replace(b"max_iter: 10000",
                                                             b"max_iter: 20000"))
    before = state(net_yaml, solver_yaml)
    r = invoke("convert", src)
    assert r.exit_code == 1 and f"{solver_yaml}: not overwritten: it was changed" in r.output
    assert "-o to write elsewhere" in r.output
    assert state(net_yaml, solver_yaml) == before
    r = invoke("convert", src, "--force")
    assert r.exit_code == 0, r.output
    assert solver_yaml.read_bytes() == first[solver_yaml][1]


def test_o_onto_an_existing_file_is_refused(tmp_path):
    for name, content in [("notes.txt", b"my notes\n"),
                          ("hand.yaml", HAND_YAML),
                          # an older netspec's header (no checksum), edited or not: cannot tell
                          ("old.yaml", (b"# Converted by `netspec convert` from lenet.prototxt "
                                        b"(Caffe current format).\nname: LeNet\n")),
                          # a header whose checksum does not match the rest
                          ("forged.yaml", (b"# Converted by `netspec convert` from x; sha256 "
                                           + b"0" * 64 + b"\nname: LeNet\n"))]:
        out = tmp_path / name
        out.write_bytes(content)
        r = invoke("convert", DEPLOY, "-o", out)
        assert r.exit_code == 1, (name, r.output)
        assert f"{out}: not overwritten" in r.output and "--force" in r.output
        assert "-o to write elsewhere" in r.output
        assert out.read_bytes() == content
        with pytest.raises(OverwriteError):
            convert(DEPLOY, out)
        assert out.read_bytes() == content
    r = invoke("convert", DEPLOY, "-o", tmp_path / "notes.txt", "--force")
    assert r.exit_code == 0, r.output
    assert is_own_unchanged((tmp_path / "notes.txt").read_bytes())


def test_a_symbolic_link_is_not_replaced(tmp_path, deploy_yaml):
    link = tmp_path / "link.yaml"
    link.symlink_to(deploy_yaml)
    r = invoke("convert", DEPLOY, "-o", link)
    assert r.exit_code == 1 and "symbolic link" in r.output
    assert link.is_symlink()


def test_the_header_records_the_checksum_of_the_rest(deploy_yaml):
    raw = deploy_yaml.read_bytes()
    first, rest = raw.split(b"\n", 1)
    assert first.startswith(b"# Converted by `netspec convert` from lenet.prototxt "
                            b"(Caffe current format); sha256 ")
    assert first.endswith(hashlib.sha256(rest).hexdigest().encode())
    assert is_own_unchanged(raw) and not is_own_unchanged(raw + b"\n")


# -- convert: .npz ---------------------------------------------------------------------------------
def test_an_existing_npz_is_never_replaced_without_force(tmp_path, deploy_yaml):
    out = tmp_path / "w.npz"
    r = invoke("convert", CAFFEMODEL, "--model", deploy_yaml, "-o", out)
    assert r.exit_code == 0, r.output
    # no marker array: only the net's blobs, so even a strict load (resume) finds nothing unused
    net = Net(load_net(deploy_yaml), "TEST", Backend(np, np.float32))
    assert load_weights(net, out, strict=True) == ([], [])
    for content in (out.read_bytes(), b"not netspec's"):    # netspec's own .npz too
        out.write_bytes(content)
        before = state(out)
        r = invoke("convert", CAFFEMODEL, "--model", deploy_yaml, "-o", out)
        assert r.exit_code == 1, r.output
        assert f"{out}: not overwritten: it exists" in r.output and "--force" in r.output
        assert state(out) == before
    r = invoke("convert", CAFFEMODEL, "--model", deploy_yaml, "-o", out, "--force")
    assert r.exit_code == 0, r.output
    assert sorted(load_npz(out)) == sorted(load_npz(TRAINED / "lenet_iter_10000_weights.npz"))


# -- export: prototxt and caffemodel -------------------------------------------------------------
def test_export_prototxt_rerun_edit_and_force(tmp_path, deploy_yaml):
    out = tmp_path / "back.prototxt"
    out.write_bytes(b'name: "mine"\n')
    r = invoke("export", deploy_yaml, "-o", out)
    assert r.exit_code == 1 and f"{out}: not overwritten: netspec did not write it" in r.output
    assert "--force" in r.output and out.read_bytes() == b'name: "mine"\n'
    r = invoke("export", deploy_yaml, "-o", out, "--force")
    assert r.exit_code == 0, r.output
    assert out.read_bytes().startswith(b"# Exported by `netspec export` from lenet.yaml; sha256 ")
    r = invoke("export", deploy_yaml, "-o", out)         # its own unchanged output: fine
    assert r.exit_code == 0, r.output
    out.write_bytes(out.read_bytes().replace(b'"LeNet"', b'"LeNet2"'))
    before = state(out)
    r = invoke("export", deploy_yaml, "-o", out)
    assert r.exit_code == 1 and f"{out}: not overwritten: it was changed since" in r.output
    assert state(out) == before


def test_export_refuses_an_existing_caffemodel_and_writes_no_prototxt(tmp_path, deploy_yaml):
    weights = tmp_path / "w.npz"
    assert invoke("convert", CAFFEMODEL, "--model", deploy_yaml, "-o", weights).exit_code == 0
    proto, model = tmp_path / "back.prototxt", tmp_path / "back.caffemodel"
    r = invoke("export", deploy_yaml, "--weights", weights, "-o", proto)
    assert r.exit_code == 0, r.output
    proto.unlink()
    before = state(proto, model)
    r = invoke("export", deploy_yaml, "--weights", weights, "-o", proto)
    assert r.exit_code == 1
    assert f"{model}: not overwritten: it exists" in r.output
    assert "--force" in r.output and "--caffemodel to write elsewhere" in r.output
    assert state(proto, model) == before and not proto.exists()
    # and a hand-written prototxt stops the caffemodel too
    model.unlink()
    proto.write_bytes(b'name: "mine"\n')
    before = state(proto, model)
    r = invoke("export", deploy_yaml, "--weights", weights, "-o", proto)
    assert r.exit_code == 1 and f"{proto}: not overwritten" in r.output
    assert state(proto, model) == before and not model.exists()
    # both refused: one message naming both
    model.write_bytes(b"x")
    r = invoke("export", deploy_yaml, "--weights", weights, "-o", proto)
    assert r.exit_code == 1 and "2 files not overwritten" in r.output
    assert str(proto) in r.output and str(model) in r.output
    r = invoke("export", deploy_yaml, "--weights", weights, "-o", proto, "--force")
    assert r.exit_code == 0, r.output
    assert model.stat().st_size > 1000


def test_export_net_library_call(tmp_path, deploy_yaml):
    out = tmp_path / "n.prototxt"
    out.write_text("mine\n")
    with pytest.raises(OverwriteError) as e:
        export_net(deploy_yaml, out)
    assert isinstance(e.value, ConvertError) and isinstance(e.value, NetspecError)
    assert e.value.file == str(out) and "--force" in str(e.value)
    assert out.read_text() == "mine\n"
    export_net(deploy_yaml, out, force=True)
    assert is_own_unchanged(out.read_bytes())


def test_one_commands_header_does_not_let_the_other_replace_the_file(tmp_path, deploy_yaml):
    """A prototxt from `netspec export` is not replaced by `netspec convert -o`, nor a YAML from
    `netspec convert` by `netspec export -o`."""
    proto = tmp_path / "back.prototxt"
    assert invoke("export", deploy_yaml, "-o", proto).exit_code == 0
    before = state(proto, deploy_yaml)
    r = invoke("convert", DEPLOY, "-o", proto)
    assert r.exit_code == 1 and "written by `netspec export`" in r.output, r.output
    other = tmp_path / "other.yaml"
    assert invoke("convert", DEPLOY, "-o", other).exit_code == 0
    r = invoke("export", deploy_yaml, "-o", other)
    assert r.exit_code == 1 and "written by `netspec convert`" in r.output, r.output
    assert state(proto, deploy_yaml) == before


# -- never, even with --force ------------------------------------------------------------------
def test_inputs_and_colliding_outputs_are_refused_even_with_force(solver_dir, deploy_yaml,
                                                                  tmp_path):
    weights = tmp_path / "w.npz"
    assert invoke("convert", CAFFEMODEL, "--model", deploy_yaml, "-o", weights).exit_code == 0
    before = state(weights)
    r = invoke("export", deploy_yaml, "--weights", weights, "-o", tmp_path / "b.prototxt",
               "--caffemodel", weights, "--force")
    assert r.exit_code == 1 and "would overwrite the input" in r.output
    assert state(weights) == before and not (tmp_path / "b.prototxt").exists()
    r = invoke("convert", CAFFEMODEL, "--model", deploy_yaml, "-o", deploy_yaml, "--force")
    assert r.exit_code == 1 and "would overwrite the input" in r.output
    # the solver's -o onto the YAML its own net is written to
    r = invoke("convert", solver_dir / "lenet_solver.prototxt", "-o",
               solver_dir / "lenet_train_test.yaml", "--force")
    assert r.exit_code == 1 and "two outputs of this command" in r.output
    assert not (solver_dir / "lenet_train_test.yaml").exists()

