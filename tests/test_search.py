"""`netspec search`: parameter parsing, a small search on a tiny MLP (bounds, the validation split
never touching the test split, the best YAML training), two processes sharing one journal
file, a real PostgreSQL server, and a killed search that resumes to the requested total."""

from __future__ import annotations

import csv
import glob
import importlib.util
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from netspec.cli import main
from netspec.search import SearchConfig, SearchError, parse_param

HAS_OPTUNA = importlib.util.find_spec("optuna") is not None
needs_optuna = pytest.mark.skipif(not HAS_OPTUNA, reason="optuna is not installed: pip install 'netspec[search]'")

NET = """\
name: tiny-mlp
layer:
  - name: mnist
    type: Data
    top: [data, label]
    include: {phase: TRAIN}
    transform_param: {scale: 0.00392156862745098}
    data_param: {source: "builtin:mnist", split: train, batch_size: 30, shuffle: true, limit: 300}
  - name: mnist
    type: Data
    top: [data, label]
    include: {phase: TEST}
    transform_param: {scale: 0.00392156862745098}
    data_param: {source: "builtin:mnist", split: test, batch_size: 100}
  - name: fc1
    type: InnerProduct
    bottom: data
    top: fc1
    param: [{decay_mult: 1}, {decay_mult: 0}]
    inner_product_param: {num_output: 16, weight_filler: {type: msra}}
  - {name: relu1, type: ReLU, bottom: fc1, top: fc1}
  - {name: drop1, type: Dropout, bottom: fc1, top: fc1, dropout_param: {dropout_ratio: 0.1}}
  - name: fc2
    type: InnerProduct
    bottom: fc1
    top: fc2
    param: [{decay_mult: 1}, {decay_mult: 0}]
    inner_product_param: {num_output: 10, weight_filler: {type: msra}}
  - {name: accuracy, type: Accuracy, bottom: [fc2, label], top: accuracy, include: {phase: TEST}}
  - {name: loss, type: SoftmaxWithLoss, bottom: [fc2, label], top: loss}
"""

SOLVER = """\
net: ../models/tiny.yaml
base_lr: 0.01
momentum: 0.9
weight_decay: 0.0001
regularization_type: L2
max_iter: 100
test_iter: 10
test_interval: 50
snapshot_prefix: ../runs/tiny
random_seed: 1
"""

PARAMS = ["base_lr=loguniform:1e-4:1e-1", "weight_decay=loguniform:1e-8:1e-3"]


def _files(tmp_path: Path, npz: bool = False) -> Path:
    """models/tiny.yaml + solvers/tiny.yaml; ``npz``: the 300 images as a small .npz source, so
    that worker processes start without decoding the built-in MNIST."""
    (tmp_path / "models").mkdir()
    (tmp_path / "solvers").mkdir()
    net = NET
    if npz:
        import numpy as np

        from netspec.data.mnist import load_mnist

        images, labels = load_mnist("train")
        np.savez(tmp_path / "models" / "mnist300.npz", data=images[:300], label=labels[:300])
        net = net.replace('source: "builtin:mnist", split: test', 'source: mnist300.npz')
        net = net.replace('source: "builtin:mnist", split: train', 'source: mnist300.npz')
    (tmp_path / "models" / "tiny.yaml").write_text(net)
    solver = tmp_path / "solvers" / "tiny.yaml"
    solver.write_text(SOLVER)
    return solver


def _cli(*args, cwd=None):
    return [sys.executable, "-m", "netspec.cli", "search", *map(str, args)]


def _study(storage, name):
    import optuna

    from netspec.search import open_storage

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna.load_study(study_name=name, storage=open_storage(str(storage)))


def _finished(study):
    from optuna.trial import TrialState

    return [t for t in study.get_trials(deepcopy=False) if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]


# -- parsing (no Optuna needed) -----------------------------------------------------------------
def test_parse_param_kinds_and_errors():
    p = parse_param("base_lr=loguniform:1e-6:1e-2")
    assert (p.path, p.kind, p.low, p.high, p.log) == ("base_lr", "loguniform", 1e-6, 1e-2, True)
    assert parse_param("momentum=uniform:0:0.99").log is False
    q = parse_param("layer.fc1.inner_product_param.num_output=int:8:64")
    assert (q.low, q.high, q.is_layer) == (8, 64, True) and isinstance(q.low, int)
    c = parse_param("type=choice:SGD,Adam")
    assert c.choices == ("SGD", "Adam")
    assert parse_param("layer.d.dropout_param.dropout_ratio=choice:0.1,0.5").choices == (0.1, 0.5)
    for bad, words in [("base_lr", "PATH=KIND"), ("base_lr=logunifrom:1e-6:1e-2", "loguniform"),
                       ("base_lr=loguniform:0:1", "above 0"), ("base_lr=uniform:1:0", "below"),
                       ("base_lr=uniform:1", "two bounds"), ("max_iter=int:1:9", "set by the search"),
                       ("layer.mnist.data_param.limit=int:1:9", "--set"),
                       ("base_lr=uniform:a:1", "not a number"), ("x=int:1.5:3", "not an integer")]:
        with pytest.raises(SearchError) as e:
            parse_param(bad)
        assert words in str(e.value), (bad, str(e.value))


def test_missing_optuna_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "optuna", None)  # import optuna -> ImportError
    r = CliRunner().invoke(main, ["search", str(_files(tmp_path)), "--param", PARAMS[0]])
    assert r.exit_code == 1
    assert "needs Optuna" in r.output and "pip install 'netspec[search]'" in r.output


@pytest.mark.parametrize("variant", ["shared", "train-only"])
def test_validation_layer_for_nets_without_a_test_data_layer(tmp_path, monkeypatch, variant):
    """One Data layer for both phases, or none in TEST: the search adds a TEST copy that reads the
    held-out part; the TRAIN layer reads the rest. (No Optuna needed.)"""
    from netspec.backend import get_backend
    from netspec.net import Net
    from netspec.search import Problem

    solver = _files(tmp_path)
    net = tmp_path / "models" / "tiny.yaml"
    text = net.read_text()
    start = text.index("  - name: mnist\n    type: Data\n    top: [data, label]\n    include: {phase: TEST}")
    end = text.index("  - name: fc1")
    text = text[:start] + text[end:]
    if variant == "shared":
        text = text.replace("    include: {phase: TRAIN}\n", "", 1)
    net.write_text(text)
    with monkeypatch.context() as m:
        seen = _forbid_test_split(m)
        problem = Problem(SearchConfig(solver=str(solver), params=PARAMS, epochs=2, seed=1),
                          [parse_param(p) for p in PARAMS], tmp_path)
        sp, net_param, per_epoch = problem.build({"base_lr": 0.05})
        backend = get_backend(False)
        train, test = Net(net_param, "TRAIN", backend), Net(net_param, "TEST", backend)
    assert "test" not in seen
    assert (per_epoch, sp.max_iter, sp.test_interval, list(sp.test_iter)) == (8, 16, 8, [1])
    assert sp.base_lr == 0.05 and sp.test_initialization is False and sp.snapshot_after_train is False
    data = {n.phase: next(l for l in n.layers if type(l).__name__ == "Data") for n in (train, test)}
    assert (data["TRAIN"].n, data["TEST"].n) == (240, 60)
    assert data["TEST"].p.batch_size == 60 and data["TEST"].p.shuffle is False
    assert "accuracy" in test.output_names


# -- a small search, in this process ------------------------------------------------------------
def _forbid_test_split(monkeypatch) -> list[str]:
    import netspec.data.mnist
    import netspec.data.sources
    import netspec.search.split

    seen: list[str] = []
    real_open, real_load = netspec.data.sources.open_source, netspec.data.mnist.load_mnist

    def load(split="train", folder=None):
        seen.append(split)
        assert split != "test", "the search read the test split"
        return real_load(split, folder)

    def open_source(source, split="train", base_dir=None, **kwargs):
        seen.append(split)
        assert split != "test", f"the search opened {source} split 'test'"
        return real_open(source, split, base_dir, **kwargs)

    monkeypatch.setattr(netspec.data.mnist, "load_mnist", load)
    monkeypatch.setattr(netspec.data.sources, "load_mnist", load)
    monkeypatch.setattr(netspec.search.split, "open_source", open_source)
    return seen


@needs_optuna
def test_search_bounds_split_best_yaml_and_plot(tmp_path, monkeypatch):
    from netspec.search import Problem, run_search

    solver = _files(tmp_path)
    params = PARAMS + ["layer.drop1.dropout_param.dropout_ratio=uniform:0.0:0.5"]
    plot = tmp_path / "search.png" if importlib.util.find_spec("matplotlib") else None
    cfg = SearchConfig(solver=str(solver), params=params, trials=5, epochs=2, sampler="random",
                       pruner="none", out=str(tmp_path / "out"), best_out=str(tmp_path / "best" / "best.yaml"),
                       plot=str(plot) if plot else None, seed=3)
    lines: list[str] = []
    with monkeypatch.context() as m:
        seen = _forbid_test_split(m)
        outcome = run_search(cfg, echo=lines.append)
        problem = Problem(cfg, [parse_param(p) for p in params], tmp_path)
    assert "test" not in seen and "train" in seen
    # 300 records: 60 held out (shuffled with the seed), 240 to train on, 8 iterations per epoch
    assert (problem.split.n_train, problem.split.n_val) == (240, 60)
    assert problem.split.val_batch * problem.split.val_iter == 60
    rows = outcome.rows
    assert outcome.counts["finished"] == 5 and len(rows) == 5
    for r in rows:
        assert r["state"] == "complete" and r["iterations"] == 16 and sorted(r["intermediate"]) == [1, 2]
        assert 1e-4 <= r["params"]["base_lr"] <= 1e-1
        assert 1e-8 <= r["params"]["weight_decay"] <= 1e-3
        assert 0.0 <= r["params"]["layer.drop1.dropout_param.dropout_ratio"] <= 0.5
        assert 0.0 <= r["value"] <= 1.0 and r["value"] == r["intermediate"][2]
    lrs = sorted(r["params"]["base_lr"] for r in rows)
    assert len(set(lrs)) == 5  # distinct draws
    assert [r["rank"] for r in rows] == [1, 2, 3, 4, 5]
    assert rows[0]["value"] == max(r["value"] for r in rows)
    table = [ln for ln in lines if ln.startswith("Best-1 (val acc: ")]
    assert table and "| base_lr: " in table[0] and "| weight_decay: " in table[0]
    with open(outcome.csv) as f:
        assert len(list(csv.DictReader(f))) == 5
    data = json.loads(outcome.json.read_text())
    assert data["metric"] == "accuracy" and len(data["trials"]) == 5
    if plot:
        from netspec.tools.plot_search import is_search_results, plot_search

        assert plot.exists() and plot.stat().st_size > 10_000
        assert is_search_results(outcome.json) and not is_search_results(solver)
        assert plot_search(outcome.json, tmp_path / "again.svg").stat().st_size > 10_000

    # the best configuration: the original solver with the chosen values; the layer value in a
    # net copy beside it; every path valid relative to the new file; it trains
    from netspec.spec import load_net, load_solver

    best = tmp_path / "best" / "best.yaml"
    sp = load_solver(best)
    assert sp.base_lr == rows[0]["params"]["base_lr"] and sp.weight_decay == rows[0]["params"]["weight_decay"]
    net = load_net(sp.net)
    drop = next(lp for lp in net.layer if lp.name == "drop1")
    assert drop.dropout_param.dropout_ratio == rows[0]["params"]["layer.drop1.dropout_param.dropout_ratio"]
    assert sp.snapshot_prefix == str((tmp_path / "runs" / "tiny_best").resolve())
    r = CliRunner().invoke(main, ["train", str(best), "--max-iter", "3", "--quiet"])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "runs" / "tiny_best_iter_3.weights.npz").exists()

    # a rerun with other settings refuses to mix them into this study, naming the journal and
    # leaving it as it was; one with more trials continues
    journal = tmp_path / "out" / "search.journal"
    before = journal.read_bytes()
    with pytest.raises(SearchError, match=f"in {journal} was created with other settings"):
        run_search(SearchConfig(**{**cfg.__dict__, "epochs": 3, "plot": None}), echo=lines.append)
    assert journal.read_bytes() == before
    more = run_search(SearchConfig(**{**cfg.__dict__, "trials": 6, "plot": None, "metric": None,
                                      "direction": None}), echo=lines.append)
    assert more.counts["finished"] == 6
    assert {r["number"]: r["params"] for r in more.rows if r["number"] < 5} == \
        {r["number"]: r["params"] for r in rows}


@needs_optuna
def test_param_errors_name_the_param(tmp_path):
    from netspec.search import run_search

    solver = _files(tmp_path)
    for params, words in [(["weight_decy=loguniform:1e-8:1e-4"], "Did you mean 'weight_decay'"),
                          (["base_lr=uniform:-1:1"], "base_lr=-1"),
                          (["layer.fc9.dropout_param.dropout_ratio=uniform:0:0.5"], "no layer named 'fc9'")]:
        cfg = SearchConfig(solver=str(solver), params=params, trials=1, epochs=1, out=str(tmp_path / "o"))
        with pytest.raises(Exception) as e:
            run_search(cfg, echo=lambda s: None)
        assert words in str(e.value), str(e.value)
    cfg = SearchConfig(solver=str(solver), params=PARAMS, trials=1, epochs=1, metric="acc",
                       out=str(tmp_path / "o"))
    with pytest.raises(SearchError, match="Did you mean 'accuracy'"):
        run_search(cfg, echo=lambda s: None)


# -- several processes on one storage ------------------------------------------------------------
@needs_optuna
def test_two_processes_share_one_journal_file(tmp_path):
    solver = _files(tmp_path, npz=True)
    journal = tmp_path / "shared" / "search.journal"
    args = _cli(solver, *sum((["--param", p] for p in PARAMS), []), "--trials", 6, "--epochs", 60,
                "--pruner", "none", "--storage", journal, "--study", "shared", "--quiet")
    a = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path)
    b = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path)
    outs = [p.communicate(timeout=120) for p in (a, b)]
    assert a.returncode == 0 and b.returncode == 0, outs
    study = _study(journal, "shared")
    trials = study.get_trials(deepcopy=False)
    numbers = [t.number for t in trials]
    assert len(numbers) == len(set(numbers))
    assert 6 <= len(_finished(study)) <= 7  # both may start the last trial at the same moment
    workers = {t.user_attrs["worker"] for t in _finished(study)}
    assert len(workers) == 2, workers
    assert (tmp_path / "shared" / "shared.csv").exists()


def _pg_bin() -> Path | None:
    for d in [*(Path(p) for p in os.environ.get("PATH", "").split(os.pathsep)),
              *sorted(Path(p) for p in glob.glob("/usr/lib/postgresql/*/bin"))[::-1]]:
        if (d / "initdb").exists() and (d / "pg_ctl").exists():
            return d
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@needs_optuna
def test_search_on_a_real_postgresql_server(tmp_path, request):
    bindir = _pg_bin()
    if bindir is None:
        pytest.skip("PostgreSQL's initdb/pg_ctl not found (apt-get install postgresql)")
    if not (importlib.util.find_spec("psycopg") or importlib.util.find_spec("psycopg2")):
        pytest.skip("no PostgreSQL driver: pip install 'netspec[search]' (psycopg)")
    prefix: list[str] = []
    # the server's folder: outside pytest's tmp_path, whose parents only root may enter
    pgdir = Path(tempfile.mkdtemp(prefix="netspec-pg-"))
    request.addfinalizer(lambda: shutil.rmtree(pgdir, ignore_errors=True))
    if os.geteuid() == 0:  # initdb refuses to run as root
        try:
            pw = pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root and there is no 'postgres' user to run the server")
        runuser = shutil.which("runuser")
        if runuser is None:
            pytest.skip("running as root without runuser to start the server as 'postgres'")
        prefix = [runuser, "-u", "postgres", "--"]
        os.chown(pgdir, pw.pw_uid, pw.pw_gid)
    port = _free_port()
    data = pgdir / "data"
    r = subprocess.run(prefix + [str(bindir / "initdb"), "-D", str(data), "-U", "postgres",
                                 "--auth=trust", "-E", "UTF8", "--no-sync"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    pg_ctl = prefix + [str(bindir / "pg_ctl"), "-D", str(data)]
    r = subprocess.run(pg_ctl + ["-o", f"-p {port} -k {pgdir} -c listen_addresses=127.0.0.1 -c fsync=off "
                                 "-c synchronous_commit=off -c full_page_writes=off",
                                 "-l", str(pgdir / "log"), "-w", "start"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr + (pgdir / "log").read_text()
    try:
        from netspec.search import run_search

        url = f"postgresql://postgres@127.0.0.1:{port}/postgres"
        cfg = SearchConfig(solver=str(_files(tmp_path, npz=True)), params=PARAMS, trials=3, epochs=2,
                           storage=url, study="pg", out=str(tmp_path / "out"), pruner="none")
        outcome = run_search(cfg, echo=lambda s: None)
        assert outcome.counts["complete"] == 3
        study = _study(url, "pg")
        assert len(_finished(study)) == 3 and study.best_trial.value == outcome.rows[0]["value"]
    finally:
        subprocess.run(pg_ctl + ["-m", "immediate", "-w", "stop"], capture_output=True)


TOTAL = 24  # enough trials that the kill lands mid-search even on a quiet machine


@needs_optuna
def test_killed_search_resumes_to_the_total(tmp_path):
    solver = _files(tmp_path, npz=True)
    out = tmp_path / "out"
    args = _cli(solver, *sum((["--param", p] for p in PARAMS), []), "--trials", TOTAL, "--epochs", 10,
                "--pruner", "none", "--out", out, "--study", "k", "--quiet")
    proc = subprocess.Popen(args + ["--jobs", "2"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True, cwd=tmp_path, start_new_session=True)
    journal = out / "search.journal"
    deadline = time.time() + 60
    before = {}
    try:
        while time.time() < deadline and proc.poll() is None:
            if journal.exists():
                try:
                    done = _finished(_study(journal, "k"))
                except KeyError:  # the storage exists, the study not yet
                    continue
                if len(done) >= 2:
                    before = {t.number: t.params for t in done}
                    break
            time.sleep(0.05)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the main process and both workers, mid-trial
        proc.communicate()
    assert len(before) >= 2, "no trial finished before the kill"
    assert len(before) < TOTAL, "the search finished before it could be killed"
    r = subprocess.run(args, capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert r.returncode == 0, r.stderr
    study = _study(journal, "k")
    done = _finished(study)
    assert len(done) == TOTAL, "\n".join(
        f"{t.number} {t.state.name} pid={t.user_attrs.get('pid')} {t.user_attrs.get('abandoned', '')} "
        f"{t.datetime_start} {t.datetime_complete}" for t in study.get_trials()) + "\n" + r.stderr
    assert {t.number: t.params for t in done if t.number in before} == before  # nothing lost
    numbers = [t.number for t in study.get_trials(deepcopy=False)]
    assert len(numbers) == len(set(numbers))
    from optuna.trial import TrialState

    assert not study.get_trials(states=(TrialState.RUNNING,))  # the killed workers' trials were reclaimed
    assert "Best-1 (val acc: " in r.stderr


# -- a trial's own failure, study names ------------------------------------------------------------
@needs_optuna
def test_a_failing_trial_is_marked_failed_and_the_search_goes_on(tmp_path, monkeypatch):
    """A trial that fails (here: MemoryError, as for a sampled num_output of 1e9) is recorded
    as failed with its error; the other trials run and the search ends normally."""
    from optuna.trial import TrialState

    from netspec.search import run_search
    from netspec.search.trial import Problem

    solver = _files(tmp_path)
    real, calls = Problem.run, []

    def run(self, values, report, seed):
        calls.append(seed)
        if len(calls) == 2:
            raise MemoryError("Unable to allocate 2.9 TiB for an array")
        return real(self, values, report, seed)

    monkeypatch.setattr(Problem, "run", run)
    cfg = SearchConfig(solver=str(solver), params=PARAMS, trials=3, epochs=1, sampler="random",
                       pruner="none", out=str(tmp_path / "out"), plot=None, seed=2)
    lines: list[str] = []
    outcome = run_search(cfg, echo=lines.append)
    assert outcome.counts["finished"] == 3 and outcome.counts["failed"] == 1
    assert outcome.counts["complete"] == 2 and len(calls) == 3
    study = _study(tmp_path / "out" / "search.journal", "tiny")
    failed = [t for t in study.get_trials() if t.state == TrialState.FAIL]
    assert [t.user_attrs["error"] for t in failed] == \
        ["MemoryError: Unable to allocate 2.9 TiB for an array"]
    assert any("failed: MemoryError" in line for line in lines)


@pytest.mark.parametrize("name", ["../../../x", "a/b", "/tmp/x", ".hidden", "", "a b"])
def test_a_study_name_is_a_name_not_a_path(tmp_path, name):
    from netspec.search.config import default_paths

    cfg = SearchConfig(solver=str(tmp_path / "s.yaml"), params=PARAMS, study=name or ".")
    with pytest.raises(SearchError, match="--study: the study name .* is not a plain name"):
        default_paths(cfg)
    assert not list(tmp_path.parent.glob("x"))


def test_a_damaged_journal_line_is_one_clear_error(tmp_path):
    """A line cut off by a killed worker, or a line that is no journal operation, is named with
    the file and what to do (Optuna itself stops with a bare JSON error)."""
    from netspec.search.study import check_journal

    ops = ['{"op_code": 0, "worker_id": "w", "study_name": "s", "directions": [1]}',
           '{"op_code": 2, "worker_id": "w", "study_id": 0, "user_attr": {"a": 1}}']
    journal = tmp_path / "search.journal"
    journal.write_text("\n".join(ops) + "\n")
    check_journal(journal)                                  # whole: fine
    journal.write_text("\n".join(ops) + '\n{"op_code": 4, "worker_id": "w", "tri')
    with pytest.raises(SearchError) as e:
        check_journal(journal)
    assert str(e.value).startswith(f"{journal}:3: line 3 of the search journal: its last line "
                                   "is cut off")
    journal.write_text(ops[0] + "\nnot json\n" + ops[1] + "\n")
    with pytest.raises(SearchError, match="2: line 2 of the search journal: this line is not an "
                                          "operation of an Optuna journal"):
        check_journal(journal)


@needs_optuna
def test_search_on_a_cut_off_journal_exits_1_naming_it(tmp_path):
    solver = _files(tmp_path)
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "search.journal").write_text('{"op_code": 0, "worker_id": "w", "stu')
    r = subprocess.run(_cli(solver, "--param", PARAMS[0], "--trials", "1", "--epochs", "1",
                            "--out", tmp_path / "out"), capture_output=True, text=True)
    assert r.returncode == 1, r.stderr
    assert "search.journal:1: line 1 of the search journal: its last line is cut off" in r.stderr
    assert "Traceback" not in r.stderr and "internal error" not in r.stderr
