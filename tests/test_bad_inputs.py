"""The bad-input corpus: every case of every ``tests/bad_inputs/*cases.tsv`` fails cleanly.

A case runs its command line (``netspec validate FILE``, ``netspec train FILE`` ...) in its
own process, in a copy of ``tests/bad_inputs`` under a temporary folder, with ``HOME`` and
``TMPDIR`` there too, and must:

* exit non-zero and not 2 (an internal error, or a usage error the case did not mean);
* print one error line to stderr, last (training's info and warning log lines may come
  before it), ``netspec: error: ...``, that names the file (its base
  name; the ``names`` column when the message is about a file the case's file refers to), the
  line (``FILE:LINE:``) when the manifest gives one, and the manifest's phrase;
* print no traceback and no "internal error" anywhere;
* finish within ``CASE_LIMIT_S``;

and no case may write a file in the repository, nor change, add or remove a file of the corpus
it reads (a search journal a refused search appended to, a net YAML written beside a net).

Speed: by default the cases run in forked children of one process that imports netspec once
(``tests/bad_inputs/run_cases.py``), two at a time: the whole corpus takes seconds.
``NETSPEC_BAD_INPUTS_EXEC=1`` runs each case as ``python -m netspec.cli ...`` instead (about
1.5 s a case).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BAD = ROOT / "tests" / "bad_inputs"
CASE_LIMIT_S = 20.0
EXEC = os.environ.get("NETSPEC_BAD_INPUTS_EXEC") == "1"
_ENV_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*=.*")
#: a line of Caffe's log format (info or warning) that training prints before it fails
LOG_LINE = re.compile(r"[IW]\d{4} \d\d:\d\d:\d\d\.\d{6} +\d+ \S+:\d+\] ")


@dataclass(frozen=True)
class Case:
    manifest: str
    file: str        # relative to the repository root
    command: str     # relative to the repository root, with {file}
    phrase: str
    line: int | None
    names: str       # the file the message names, when not ``file``
    case: str = ""   # the manifest's case id, when it has one

    @property
    def id(self) -> str:
        return self.case or self.file

    @property
    def writes(self) -> bool:
        """Whether the command names an output folder (``{tmp}``) that must stay empty."""
        return "{tmp}" in self.command

    def argv_env(self, tmp: str = "") -> tuple[list[str], dict[str, str]]:
        words = shlex.split(self.command.replace("{file}", shlex.quote(self.file))
                            .replace("{tmp}", shlex.quote(tmp)))
        env = {}
        while words and _ENV_WORD.fullmatch(words[0]):
            name, value = words.pop(0).split("=", 1)
            env[name] = value
        assert words and words[0] == "netspec", f"{self.manifest}: {self.command!r} is not netspec"
        return words[1:], env


def read_cases() -> list[Case]:
    cases = []
    for manifest in sorted(BAD.glob("*cases.tsv")):
        rows = manifest.read_text(encoding="utf-8").splitlines()
        header = rows[0].split("\t")
        for raw in rows[1:]:
            if not raw.strip() or raw.startswith("#"):
                continue
            row = dict(zip(header, raw.split("\t")))
            line = (row.get("line") or "").strip()
            phrase = row["phrase"] if "phrase" in row else row["expect"]
            cases.append(Case(manifest.name, row["file"], row["command"], phrase,
                              int(line) if line else None, (row.get("names") or "").strip(),
                              row.get("case", "")))
    return cases


CASES = read_cases()


def _tree(root: Path) -> dict[str, tuple[int, int]]:
    """path -> (size, mtime) of every file under the repository (not .git or caches)."""
    out = {}
    for folder, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if d not in (".git", "__pycache__", ".pytest_cache")]
        for name in files:
            path = os.path.join(folder, name)
            try:
                st = os.lstat(path)
            except OSError:
                continue
            out[os.path.relpath(path, root)] = (st.st_size, st.st_mtime_ns)
    return out


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """Run every case once: (results by case id, repository files before, after)."""
    work = tmp_path_factory.mktemp("bad_inputs")
    shutil.copytree(BAD, work / "tests" / "bad_inputs", symlinks=True,
                    ignore=shutil.ignore_patterns("__pycache__"))
    (work / "home").mkdir()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HOME": str(work / "home"),
           "TMPDIR": str(work / "home")}
    env.pop("NETSPEC_MAX_YAML_MB", None)
    spec = {"limit": CASE_LIMIT_S, "jobs": 2, "exec": EXEC, "out": str(work / "output"), "cases": []}
    for i, case in enumerate(CASES):
        tmp = work / "outputs" / str(i)
        tmp.mkdir(parents=True)
        argv, case_env = case.argv_env(str(tmp))
        spec["cases"].append({"id": case.id, "argv": argv, "env": case_env})
    before, corpus_before = _tree(ROOT), _tree(work / "tests" / "bad_inputs")
    p = subprocess.run([sys.executable, str(BAD / "run_cases.py")], input=json.dumps(spec),
                       capture_output=True, text=True, cwd=work, env=env, check=False,
                       timeout=CASE_LIMIT_S * len(CASES) + 60)
    assert p.returncode == 0, p.stderr[-3000:]
    results = json.loads(p.stdout)
    for i, case in enumerate(CASES):
        results[case.id]["written"] = sorted(str(f.relative_to(work / "outputs" / str(i)))
                                             for f in (work / "outputs" / str(i)).rglob("*"))
    return results, (before, _tree(ROOT)), (corpus_before, _tree(work / "tests" / "bad_inputs"))


def test_there_are_cases():
    assert len([c for c in CASES if c.manifest == "net_cases.tsv"]) >= 120
    assert len([c for c in CASES if c.manifest == "cases.tsv"]) >= 160
    assert len([c for c in CASES if c.case.startswith("prototxt/")]) >= 40
    assert len([c for c in CASES if c.case.startswith("journal/")]) >= 15
    assert len({c.id for c in CASES}) == len(CASES)
    for case in CASES:
        path = ROOT / case.file
        assert path.exists() or path.is_symlink(), f"{case.manifest}: {case.file} is missing"
        assert case.phrase.strip(), f"{case.manifest}: {case.file} has no phrase"


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_fails_cleanly(corpus, case):
    results, _, _ = corpus
    r = results[case.id]
    what = (f"{case.command.replace('{file}', case.file)}\nrc {r['rc']}\n"
            f"stdout:\n{r['stdout'][-2000:]}\nstderr:\n{r['stderr'][-2000:]}")
    assert not r["timed_out"] and r["seconds"] < CASE_LIMIT_S, f"ran past {CASE_LIMIT_S} s\n{what}"
    assert r["rc"] not in (0, 2), what
    both = r["stdout"] + r["stderr"]
    assert "Traceback" not in both and "internal error" not in both, what
    lines = r["stderr"].strip().splitlines()
    # the training log's info and warning lines may come first; then the one error, last
    assert lines and lines[-1].startswith("netspec: error: "), what
    assert all(LOG_LINE.match(line) for line in lines[:-1]), what
    message = lines[-1]
    named = Path(case.names or case.file).name
    assert named in message, f"the message does not name {named}\n{what}"
    if case.line is not None:
        assert f"{named}:{case.line}:" in message, f"the message does not name line {case.line}\n{what}"
    assert case.phrase in message, f"no '{case.phrase}' in the message\n{what}"
    assert not r["written"], f"wrote {r['written']} into its output folder\n{what}"


def test_no_case_writes_in_the_repository(corpus):
    _, (before, after), _ = corpus
    changed = sorted(p for p in set(before) | set(after) if before.get(p) != after.get(p))
    assert not changed, changed


def test_no_case_changes_the_corpus(corpus):
    """The cases run in a copy of tests/bad_inputs: every file there is as it was."""
    _, _, (before, after) = corpus
    changed = sorted(p for p in set(before) | set(after) if before.get(p) != after.get(p))
    assert not changed, changed


def test_net_corpus_matches_its_generator(tmp_path):
    """The committed corpus is what make_net_corpus.py writes (rerun it after editing a case)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    subprocess.run([sys.executable, str(BAD / "make_net_corpus.py"), "--out", str(tmp_path)],
                   check=True, capture_output=True, env=env)
    fresh = {p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*")}
    kept = {p.relative_to(BAD).as_posix() for p in (BAD / "net").rglob("*")} | {"net_cases.tsv"}
    kept |= {"net"}
    assert fresh == kept
    for rel in fresh:
        a, b = tmp_path / rel, BAD / rel
        if a.is_symlink() or b.is_symlink():
            assert os.readlink(a) == os.readlink(b), rel
        elif a.is_file():
            assert a.read_bytes() == b.read_bytes(), rel
