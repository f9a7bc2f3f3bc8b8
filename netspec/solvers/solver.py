"""The Solver: owns iteration (Caffe's Solver::Step and SGDSolver::ApplyUpdate).

One iteration:
  1. clear parameter diffs; test first when ``iter % test_interval == 0``
  2. forward/backward ``iter_size`` times (diffs accumulate)
  3. lr_t = policy(iter)
  4. clip: if ‖g‖₂ over all blobs > clip_gradients, scale every g by clip/‖g‖₂
  5. per blob with lr_mult ≠ 0: g ← g / iter_size; "pre" regularizer (L2/L1);
     Δ = rule(g, rate = lr_t·lr_mult); W ← W − Δ; "post" regularizer (decoupled)
  6. iter += 1; snapshot every ``snapshot`` iterations
"""

from __future__ import annotations

import signal
import sys
import tempfile
import time
from collections import deque
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .. import parallel
from ..backend import Backend, get_backend, to_numpy
from ..blob import Param
from ..errors import DataError, DivergenceError, SnapshotError, SpecError
from ..files import check_writable_folder, remove_orphans
from ..graph import check_trainable
from ..log import CaffeLog, fmt
from ..net import Net
from ..snapshot import (load_weights, pack_state, rng_from_array, rng_to_array, save_npz,
                        save_weights)
from ..spec import load_net
from ..spec.params import NetState
from ..spec.solver import SolverParameter
from .detection_test import DetectionTally, mean_ap
from .lr_policy import Plateau, learning_rate
from .regularization import make_regularizer
from .rules import RULES
from .state_check import (read_state, state_array, state_data, state_history, state_iter,
                          state_weights)

#: CPU, one thread: the solver update runs over blocks of at most this many values of the flat
#: buffers (256 KiB of float32 per array), each through every pass before the next. Measured
#: (update alone, ms): LeNet 0.76 -> 0.61, MLP 0.33 -> 0.26; 32K: 0.60 / 0.27, 8K: 0.97 / 0.42.
#: Split over 2 threads, blocks gained nothing (LeNet 0.41 vs 0.42) and smaller ones lost (0.63
#: at 32K: more NumPy calls handing the GIL back and forth), so threads update whole ranges
UPDATE_BLOCK_ELEMENTS = 1 << 16


class Solver:
    def __init__(self, sp: SolverParameter, *, backend: Backend | None = None,
                 log: CaffeLog | None = None, net_param=None, dtype: str = "float32",
                 test_net_params: list | None = None, shard=None, reuse_diffs: bool = False):
        """``reuse_diffs``: the train net's blob diffs share arrays (``Net(reuse_diffs=True)``,
        ``memory_plan``): the same weights, less memory, but after a step only the diffs of
        its inputs, outputs and loss tops hold their values (``netspec train`` sets it;
        pycaffe's and ``netspec.solver``'s solvers, whose callers may read them, do not)."""
        self.sp = sp
        self.log = log or CaffeLog()
        self.backend = backend or get_backend(sp.solver_mode == "GPU", dtype, sp.device_id)
        self.xp = self.backend.xp
        seed = sp.random_seed if sp.random_seed >= 0 else int(np.random.SeedSequence().entropy % (2**31))
        self.seed = seed
        self.rng = np.random.default_rng(seed)
        if sp.type == "AdamW" and sp.regularization_type not in (None, "decoupled"):
            raise SpecError("type AdamW always decays decoupled; set regularization_type: decoupled "
                            "(or use type Adam for coupled L2/L1)", **sp.where(("regularization_type",)),
                            field="regularization_type")
        reg_kind = "decoupled" if sp.type == "AdamW" else sp.regularization_type
        self.regularizer = make_regularizer(reg_kind, sp.weight_decay)
        if sp.type in ("Adam", "AdamW") and "momentum" not in sp.model_fields_set:
            self.log.warn("Adam's beta1 is Caffe's 'momentum', which defaults to 0; set momentum: 0.9 "
                          "for the usual Adam")
        self.net_param = net_param if net_param is not None else load_net(sp.train_net or sp.net)
        train_state = sp.train_state.model_copy(update={"phase": "TRAIN"})
        check_trainable(self.net_param, NetState(
            phase="TRAIN", level=train_state.level or self.net_param.state.level,
            stage=list(train_state.stage) or list(self.net_param.state.stage)),
            sp.where(("net",)).get("file") or "")
        self.net = Net(self.net_param, "TRAIN", self.backend, self.rng,
                       level=train_state.level, stages=train_state.stage, shard=shard,
                       reuse_diffs=reuse_diffs)
        self.test_nets = self._make_test_nets(test_net_params)
        self.rule = RULES[sp.type](sp, self.xp)
        self.params = [p for p in self.net.params if p.lr_mult != 0]
        self.frozen = [p for p in self.net.params if p.lr_mult == 0]
        self.groups = self._flatten_params()
        #: the parts of flat_diff zeroed before each iteration (``_diffs_to_zero``)
        self._zeroed = self._diffs_to_zero()
        self.state = [self.rule.init_state(g) for g in self.groups]
        #: per CPU thread, the views of groups and state it updates (restore writes in place)
        self._pieces = self._update_slices()
        self.iter = 0
        self.losses: deque[float] = deque(maxlen=sp.average_loss)
        self.smoothed_loss = 0.0
        #: lr_policy plateau's state (minimum smoothed loss, last event, step)
        self.plateau = Plateau() if sp.lr_policy == "plateau" else None
        self.requested_stop = False
        self.snapshot_hooks: list[Callable[[str], None]] = []
        self.last_snapshot: str | None = None
        self.test_history: list[tuple[int, dict[str, float]]] = []
        #: callables receiving one dict per display/test event (metrics files, plots, search)
        self.listeners: list[Callable[[dict], None]] = []
        self._t0 = time.perf_counter()

    # -- nets ---------------------------------------------------------------------------------
    def _make_test_nets(self, test_net_params: list | None = None) -> list[Net]:
        """The test nets: ``test_net_params`` (already read, one per ``test_net``) or the
        ``test_net`` files, then the train net's file again for each further ``test_iter``."""
        sp = self.sp
        params = (list(test_net_params) if test_net_params is not None
                  else [load_net(p) for p in sp.test_net])
        if sp.net and len(sp.test_iter) > len(params):
            params += [self.net_param] * (len(sp.test_iter) - len(params))
        nets = []
        for i, npar in enumerate(params):
            st = sp.test_state[i] if i < len(sp.test_state) else NetState(phase="TEST")
            net = Net(npar, "TEST", self.backend, self.rng, level=st.level, stages=st.stage)
            net.share_with(self.net)
            nets.append(net)
        if sp.test_interval and not nets:
            self.log.warn("test_interval is set but no test_iter/test net: no testing")
        return nets

    def _flatten_params(self) -> list[Param]:
        """Put every learnable blob into one flat data and one flat diff buffer.

        Blobs are ordered by (lr_mult, decay_mult), so each distinct pair is one contiguous
        slice: the update then runs once per pair (usually 1-3 slices) instead of once per
        blob, with Caffe's exact scalar arithmetic. Each blob's ``data``/``diff`` become views.
        """
        order = sorted(self.params, key=lambda p: (p.lr_mult, p.decay_mult))
        total = sum(p.count for p in order)
        self.flat_data = self.backend.zeros((total,))
        self.flat_diff = self.backend.zeros((total,))
        spans: dict[tuple[float, float], list[int]] = {}  # (lr_mult, decay_mult) -> [start, end]
        self._flat_span: dict[int, tuple[int, int]] = {}   # id(blob) -> (offset, count)
        offset = 0
        for p in order:
            n = p.count
            self._flat_span[id(p)] = (offset, n)
            view = self.flat_data[offset:offset + n]
            view[...] = p.data.reshape(-1)
            p.data = view.reshape(p.shape)
            p.diff = self.flat_diff[offset:offset + n].reshape(p.shape)
            spans.setdefault((p.lr_mult, p.decay_mult), [offset, offset])[1] = offset + n
            offset += n
        groups = []
        for (lr_mult, decay_mult), (a, b) in spans.items():
            g = Param(f"group(lr_mult={lr_mult}, decay_mult={decay_mult})", self.flat_data[a:b],
                      self.xp, lr_mult, decay_mult)
            g.diff = self.flat_diff[a:b]
            groups.append(g)
        return groups

    def _diffs_to_zero(self) -> list:
        """Views of flat_diff to zero before each iteration: every blob except those whose
        first producer in backward order writes its gradient (``Layer.writes_param_diffs``,
        ``Param.diff_is_zero``), merged into contiguous runs. An MLP of InnerProducts zeroes
        nothing (the zero-fill evicted its weights from the cache: step -6 %)."""
        written: dict[int, bool] = {}
        net = self.net
        for i in range(len(net.layers) - 1, -1, -1):
            if net.layer_backward[i]:
                for p in net.layers[i].blobs:
                    written.setdefault(id(p), net.layers[i].writes_param_diffs)
        runs: list[list[int]] = []
        for p in sorted(self.params, key=lambda q: self._flat_span[id(q)]):
            if written.get(id(p), False):
                continue
            start, n = self._flat_span[id(p)]
            if runs and runs[-1][1] == start:
                runs[-1][1] = start + n
            else:
                runs.append([start, start + n])
        return [self.flat_diff[a:b] for a, b in runs]

    # -- one update ---------------------------------------------------------------------------
    def learning_rate(self, it: int | None = None) -> float:
        return learning_rate(self.sp, self.iter if it is None else it, self.plateau)

    def clip_gradients(self) -> None:
        clip = self.sp.clip_gradients
        if clip < 0:
            return
        g = self.flat_diff
        norm = float(self.xp.sqrt(self.xp.dot(g, g)))
        if norm > clip:
            self.log.info(f"Gradient clipping: scaling down gradients (L2 norm {fmt(norm)} > {fmt(clip)}) "
                          f"by scale factor {fmt(clip / norm)}")
            g *= g.dtype.type(clip / norm)

    def agree(self, loss: float) -> float:
        """The loss of this iteration as every process sees it: in one process ``loss``;
        data-parallel ranks (``netspec/distributed/``) exchange their status and losses here,
        after backward and before the display and the update."""
        return loss

    def reduce_gradients(self) -> None:
        """Before clipping and the update: data-parallel ranks average ``flat_diff`` here; in
        one process nothing."""

    def apply_update(self) -> float:
        """One update of every learnable blob (rule, decay, lr_mult/decay_mult), split into
        contiguous slices of the flat buffers over the CPU threads (elementwise: the same
        values as one pass)."""
        self.reduce_gradients()
        rate = self.learning_rate()
        if self.sp.display and self.iter % self.sp.display == 0:
            self.log.info(f"Iteration {self.iter}, lr = {fmt(rate)}", "sgd_solver.py")
        self.clip_gradients()
        reg = self.regularizer
        t = self.iter + 1

        def update(pieces):
            for p, state in pieces:
                if self.sp.iter_size > 1:
                    p.diff *= p.diff.dtype.type(1.0 / self.sp.iter_size)
                if reg is not None and reg.timing == "pre":
                    reg(self.xp, p, rate, self.sp.base_lr)
                delta = self.rule.step(p, state, rate * p.lr_mult, t)
                p.data -= p.diff if delta is None else delta
                if reg is not None and reg.timing == "post":
                    reg(self.xp, p, rate, self.sp.base_lr)
        parallel.run(update, [(pieces,) for pieces in self._pieces])
        return rate

    def _update_slices(self) -> list[list[tuple[Param, dict]]]:
        """Per thread, its (group, state) pieces, updated one after another: the flat buffers
        cut into one contiguous range per CPU thread of the net's layers (``parallel.split``),
        or, updated by one CPU thread, into near-equal blocks of at most
        ``UPDATE_BLOCK_ELEMENTS``; each group cut where a range or block ends. A block's data,
        diff and state stay in cache through all the passes of the rule and regularizer
        instead of streaming the whole buffers from memory once per pass."""
        pairs = list(zip(self.groups, self.state))
        total = sum(g.count for g in self.groups)
        threads = self.net.backend.threads        # 1 on a GPU or where BLAS has the threads
        ranges = parallel.split(total, threads if total >= parallel.SPLIT_MIN_ELEMENTS else 1)
        out = []
        for a, n in ranges:
            blocks = ([(a, n)] if self.backend.is_gpu or len(ranges) > 1 else
                      [(a + b, m) for b, m in parallel.split(n, -(-n // UPDATE_BLOCK_ELEMENTS))])
            pieces = []
            for b, m in blocks:
                start = 0
                for g, state in pairs:             # groups tile the flat buffers in order
                    lo, hi = max(b, start) - start, min(b + m, start + g.count) - start
                    if lo < hi:
                        piece = Param(g.name, g.data[lo:hi], self.xp, g.lr_mult, g.decay_mult)
                        piece.diff = g.diff[lo:hi]
                        pieces.append((piece, {name: v[lo:hi] for name, v in state.items()}))
                    start += g.count
            out.append(pieces)
        if len(out) == 1 and len(out[0]) == len(pairs):
            return [pairs]                         # whole groups: no views needed
        return out

    def step_once(self) -> float:
        """Forward/backward (iter_size times) and one update; returns the mean loss.

        On display iterations the smoothed loss and the train net's outputs are logged.
        """
        it = self.iter
        for d in self._zeroed:            # the rest is written by its first producer
            d.fill(0)
        for p in self.frozen:
            p.zero_diff()
        for p in self.net.params:         # the first backward may write them (Param)
            p.diff_is_zero = True
        loss = 0.0
        for _ in range(self.sp.iter_size):
            loss += self.net.forward_backward()
        loss /= self.sp.iter_size
        if not np.isfinite(loss):
            raise self._divergence(f"the training loss became {loss}")
        loss = self.agree(loss)
        self._smooth(loss)
        display = self.sp.display and it % self.sp.display == 0
        if self.plateau is not None:
            self._advance_plateau(it, display)
        if display:
            self.log.info(f"Iteration {it}, loss = {fmt(self.smoothed_loss)}")
            for k, name in enumerate(self.net.output_names):
                self._log_output("Train", k, name, self.net)
            self._emit("train", it, {n: float(to_numpy(self.net.blobs[n].data).mean())
                                     for n in self.net.output_names}, loss=self.smoothed_loss)
        self.apply_update()
        self.iter += 1
        return loss

    def _check_params(self) -> None:
        """Stop if a learnable blob holds NaN/Inf. Run before each snapshot; every iteration the
        loss check catches the same (non-finite weights give a non-finite loss next forward)."""
        xp = self.xp
        if not np.isfinite(float(xp.sum(self.flat_data))):
            bad = next(p for p in self.params if not bool(xp.isfinite(p.data).all()))
            raise self._divergence(f"parameter blob '{bad.name}' became non-finite (NaN/Inf)")

    def _divergence(self, what: str) -> DivergenceError:
        first = None
        for layer, tops in zip(self.net.layers, self.net.tops):
            for t in tops:
                if not bool(self.xp.isfinite(t.data).all()):
                    first = f"; the first non-finite blob in forward order is '{t.name}' (top of layer '{layer.name}')"
                    break
            if first:
                break
        bad = next((p for p in self.params if not bool(self.xp.isfinite(p.data).all())), None)
        if bad is not None and "parameter blob" not in what:
            first = (first or "") + f"; parameter blob '{bad.name}' is non-finite"
        return DivergenceError(
            f"training diverged at iteration {self.iter}: {what}{first or ''}. Lower base_lr, "
            f"add clip_gradients, or check the data scale.", field="base_lr")

    # -- the loop -----------------------------------------------------------------------------
    def solve(self, max_iter: int | None = None, progress: Any = None) -> dict:
        """Train until ``max_iter``; test, display and snapshot on the way (Caffe's Solve)."""
        sp = self.sp
        stop = sp.max_iter if max_iter is None else max_iter
        self.log.info(f"Solving {self.net.name or 'net'}")
        self.log.info(f"Learning Rate Policy: {sp.lr_policy}")
        if sp.snapshot or sp.snapshot_after_train:
            self.check_snapshot_folder()
        old_handler = self._install_sigint()
        t_start = time.perf_counter()
        start_iter = self.iter
        try:
            while self.iter < stop:
                if (sp.test_interval and self.iter % sp.test_interval == 0
                        and (self.iter > 0 or sp.test_initialization)):
                    self.test_all()
                if not self.requested_stop:
                    self.step_once()
                    if progress is not None:
                        progress(self.iter, self.smoothed_loss)
                if self.requested_stop:
                    self.log.info(f"Interrupted at iteration {self.iter}: snapshotting and stopping.")
                    self.snapshot()
                    break
                if sp.snapshot and self.iter % sp.snapshot == 0:
                    self.snapshot()
            else:
                if sp.snapshot_after_train and (not sp.snapshot or self.iter % sp.snapshot != 0):
                    self.snapshot()
                if sp.display and self.iter % sp.display == 0:
                    self.log.info(f"Iteration {self.iter}, loss = {fmt(self.smoothed_loss)}")
                    self._emit("train", self.iter, {}, loss=self.smoothed_loss)
                if sp.test_interval and self.iter % sp.test_interval == 0:
                    self.test_all()
                self.log.info("Optimization Done.")
        finally:
            signal.signal(signal.SIGINT, old_handler) if old_handler is not None else None
        wall = time.perf_counter() - t_start
        done = self.iter - start_iter
        return {"iterations": done, "wall_s": wall, "s_per_iter": wall / max(done, 1),
                "loss": self.smoothed_loss, "tests": self.test_history,
                "interrupted": self.requested_stop}

    def _advance_plateau(self, it: int, display: bool) -> None:
        """lr_policy plateau's step for iteration ``it`` (``lr_policy.Plateau``), logged as
        Intel Caffe logs it."""
        pl = self.plateau
        if pl.update(it, self.smoothed_loss, self.sp.plateau_winsize):
            self.log.info(f"Plateau Status: Iteration {it}, step = {pl.current_step}",
                          "sgd_solver.py")
        if display and pl.iter_last_event > it - self.sp.display:
            self.log.info(f"Plateau Status: Iteration {it}, current minimum_loss = "
                          f"{fmt(pl.minimum_loss)}", "sgd_solver.py")

    def _smooth(self, loss: float) -> None:
        self.losses.append(loss)
        self.smoothed_loss = sum(self.losses) / len(self.losses)

    def _log_output(self, kind: str, k: int, name: str, net: Net, value=None) -> None:
        values = to_numpy(net.blobs[name].data).reshape(-1) if value is None else np.reshape(value, -1)
        w = net.loss_weight_of(name)
        for v in values:
            extra = f" (* {fmt(w)} = {fmt(w * float(v))} loss)" if w else ""
            self.log.info(f"    {kind} net output #{k}: {name} = {fmt(float(v))}{extra}")

    def test_all(self) -> list[dict[str, float]]:
        results = []
        for i, net in enumerate(self.test_nets):
            if self.requested_stop:
                break
            results.append(self.test(i))
        return results

    def test(self, i: int = 0) -> dict[str, float]:
        """Average each output blob of test net ``i`` over ``test_iter[i]`` batches; with
        ``eval_type: detection``, the mean average precision of each output instead."""
        if self.sp.eval_type == "detection":
            return self.test_detection(i)
        sums: dict[str, Any] = {}

        def add(name, top):
            sums[name] = sums.get(name, 0.0) + top.astype(np.float64)
        passed = self._test_batches(i, add)
        if passed is None:
            return {}
        net, n, loss = passed
        out = {}
        for k, name in enumerate(net.output_names):
            mean = sums[name] / n
            self._log_output("Test", k, name, net, mean)
            out[name] = float(np.mean(mean))
        if self.sp.test_compute_loss:
            self.log.info(f"Test loss: {fmt(loss / n)}")
        return self._record_test(i, out)

    def test_detection(self, i: int = 0) -> dict[str, float]:
        """SSD's TestDetection: every output of test net ``i`` holds DetectionEvaluate rows
        (…, 5); over ``test_iter[i]`` batches they are tallied and each output reports its
        mean average precision (``ap_version``; per class with ``show_per_class_result``)."""
        tallies = {name: DetectionTally() for name in self.test_nets[i].output_names}

        def tally(name, top):
            if top.ndim < 1 or top.shape[-1] != 5:
                raise DataError(f"the detection test phase needs DetectionEvaluate rows "
                                f"(…, 5) in every output of test net #{i}; output "
                                f"'{name}' has shape {tuple(top.shape)}",
                                **self.sp.where(("eval_type",)), field="eval_type")
            tallies[name].add(top)
        passed = self._test_batches(i, tally)
        if passed is None:
            return {}
        net, n, loss = passed
        if self.sp.test_compute_loss:
            self.log.info(f"Test loss: {fmt(loss / n)}")
        out = {}
        for k, name in enumerate(net.output_names):
            try:
                aps, missing = tallies[name].average_precisions(self.sp.ap_version)
            except ValueError as e:
                raise DataError(f"test net #{i} output '{name}': {e}",
                                **self.sp.where(("eval_type",)), field="eval_type") from None
            for c in missing:
                self.log.warn(f"Missing true_pos for label: {c}")
            if self.sp.show_per_class_result:
                for c, ap in aps.items():
                    self.log.info(f"class{c}: {fmt(ap)}")
            out[name] = mean_ap(aps)
            self.log.info(f"    Test net output #{k}: {name} = {fmt(out[name])}")
        return self._record_test(i, out)

    def _test_batches(self, i: int, take):
        """Test net ``i`` forward over ``test_iter[i]`` batches, each output's values (a host
        array) handed to ``take(name, values)``; returns (net, batches, summed loss), or None
        when a Ctrl-C stopped the pass (a partial pass would report wrong results)."""
        net = self.test_nets[i]
        n = self.sp.test_iter[i] if i < len(self.sp.test_iter) else 1
        self.log.info(f"Iteration {self.iter}, Testing net (#{i})")
        loss = 0.0
        for done in range(n):
            if self.requested_stop:
                self.log.info(f"Test pass interrupted after {done} of {n} batches: not reported.")
                return None
            loss += net.forward()
            for name in net.output_names:
                take(name, to_numpy(net.blobs[name].data))
        return net, n, loss

    def _record_test(self, i: int, out: dict[str, float]) -> dict[str, float]:
        """Keep test net ``i``'s results in the history and send them to the listeners."""
        self.test_history.append((self.iter, out))
        self._emit("test", self.iter, out, net=i)
        return out

    def _emit(self, kind: str, it: int, outputs: dict[str, float], **extra) -> None:
        """Send an event to the listeners: iteration, lr, outputs, wall time, weight norms."""
        if not self.listeners:
            return
        event = {"event": kind, "iteration": it, "lr": self.learning_rate(it),
                 "wall_s": time.perf_counter() - self._t0, "outputs": outputs, **extra,
                 "weight_norms": {p.name: float(self.xp.sqrt((p.data.astype(self.xp.float64) ** 2).sum()))
                                  for p in self.net.params}}
        for listener in self.listeners:
            listener(event)

    # -- interruption -------------------------------------------------------------------------
    def _install_sigint(self):
        def handler(signum, frame):
            if self.requested_stop:  # second Ctrl-C: give up at once
                raise KeyboardInterrupt
            self.requested_stop = True
            print(f"netspec: interrupt received at iteration {self.iter}: stopping after the "
                  "current batch and snapshotting (Ctrl-C again stops at once, without a "
                  "snapshot)", file=sys.stderr, flush=True)
        try:
            return signal.signal(signal.SIGINT, handler)
        except ValueError:  # not in the main thread
            return None

    # -- snapshots ----------------------------------------------------------------------------
    def snapshot_paths(self) -> tuple[Path, Path]:
        stem = f"{self.snapshot_prefix()}_iter_{self.iter}"
        return Path(stem + ".weights.npz"), Path(stem + ".solverstate.npz")

    def snapshot_prefix(self) -> str:
        return self.sp.snapshot_prefix or "netspec"

    def check_snapshot_folder(self) -> None:
        """Before training: create the snapshot folder and write and remove a probe file there,
        so an unwritable snapshot_prefix stops the run now, not when the first snapshot is due
        (with every iteration before it lost)."""
        prefix = self.snapshot_prefix()
        try:
            check_writable_folder(prefix)
        except OSError as e:
            folder = Path(prefix).parent
            blocker = next((p for p in (folder, *folder.parents) if p.exists() and not p.is_dir()),
                           None)
            why = f"{blocker} is a file, not a folder" if blocker else e.strerror or str(e)
            raise SnapshotError(
                f"cannot write snapshots to {folder} (snapshot_prefix '{prefix}'): "
                f"{why}. Nothing was trained: give a writable snapshot_prefix "
                "(e.g. --set snapshot_prefix=runs/NAME)", **self.sp.where(("snapshot_prefix",)),
                field="snapshot_prefix") from None
        removed = remove_orphans(prefix)
        if removed:
            self.log.info(f"Removed {len(removed)} temporary file(s) left by an interrupted "
                          f"snapshot write: {', '.join(str(p) for p in removed)}")

    def snapshot(self) -> Path:
        """Write the weights and the solver state of this iteration. When a write fails (full
        disk, folder gone), both are written to a new temporary folder instead and the run
        stops with a SnapshotError naming the path that failed and where they are."""
        self._check_params()
        weights, state_path = self.snapshot_paths()
        try:
            self._write_snapshot(weights, state_path)
        except SnapshotError as e:
            raise self._rescue(e, weights, state_path) from None
        self.last_snapshot = str(state_path)
        for hook in self.snapshot_hooks:
            hook(str(state_path))
        return state_path

    def _write_snapshot(self, weights: Path, state_path: Path) -> None:
        """The weights first, then the state naming them with their SHA-256: a state always
        finds its own weights file, or restore says that the file beside it is another's."""
        digest = save_weights(self.net, weights)
        self.log.info(f"Snapshotting to {weights}")
        state: dict[str, Any] = {
            "iter": np.int64(self.iter),
            "type": np.array(self.sp.type),
            "weights": np.array(weights.name),
            "weights_sha256": np.array(digest),
            "groups": np.asarray([(g.lr_mult, g.decay_mult, g.count) for g in self.groups],
                                 dtype=np.float64).reshape(-1),
            "rng": rng_to_array(self.rng),
            "losses": np.asarray(list(self.losses), dtype=np.float64),
            **({"plateau": np.asarray([self.plateau.minimum_loss, self.plateau.iter_last_event,
                                       self.plateau.current_step], np.float64)}
               if self.plateau is not None else {}),
            "history": {str(j): dict(s) for j, s in enumerate(self.state)},
            "data": self._data_states(),
        }
        save_npz(state_path, pack_state(state))
        self.log.info(f"Snapshotting solver state to {state_path}")

    def _rescue(self, error: SnapshotError, weights: Path, state_path: Path) -> SnapshotError:
        """Write this snapshot to a fresh temporary folder after ``error``; the error to raise,
        which says where the snapshot is (or that it could not be saved anywhere)."""
        what = f"{error.file}: {error.message}" if error.file else error.message
        try:
            folder = Path(tempfile.mkdtemp(prefix="netspec-rescue-"))
            self._write_snapshot(folder / weights.name, folder / state_path.name)
        except (OSError, SnapshotError) as e:
            return SnapshotError(f"snapshot at iteration {self.iter} failed: {what}. Saving it to "
                                 f"a temporary folder failed too ({e}); the trained weights are "
                                 "lost")
        return SnapshotError(
            f"snapshot at iteration {self.iter} failed: {what}. The weights and solver state "
            f"were saved instead to {folder / weights.name} and {folder / state_path.name}; "
            f"resume with --snapshot {folder / state_path.name}")

    def all_nets(self):
        return [("train", self.net)] + [(f"test{i}", n) for i, n in enumerate(self.test_nets)]

    def _data_states(self) -> dict:
        out = {}
        for tag, net in self.all_nets():
            for layer in net.layers:
                st = layer.state_dict()
                if st:
                    out[f"{tag}:{layer.name}"] = {k: np.asarray(v) for k, v in st.items()}
        return out

    def restore(self, state_path: str | Path) -> None:
        """Resume from a ``.solverstate.npz`` (weights are read from the file it names).

        Every record is checked before anything changes, and each problem is a SnapshotError
        naming the state file (or the weights file it names) and the record: a file that is
        not a state at all, a missing or malformed record, an update-rule history that does
        not fit this net's parameter groups (an lr_mult or decay_mult changed), data cursors
        that do not fit this net's data (its limit or source changed), a weights file that is
        not the state's own.
        """
        state_path = Path(state_path)
        st = read_state(self, state_path)
        where = {"file": str(state_path)}
        it = state_iter(st, where)
        rng = np.random.default_rng()
        try:
            rng_from_array(rng, st["rng"])
        except (ValueError, TypeError, KeyError, UnicodeDecodeError, AttributeError) as e:
            raise SnapshotError(f"the random-generator record 'rng' is corrupt ({e}): the file "
                                "was damaged after it was written", **where) from None
        history = state_history(self, st, where)
        losses = state_array(st, "losses", np.asarray([], np.float64), "f", where)
        plateau = state_array(st, "plateau", np.asarray([Plateau().minimum_loss, 0, 0]), "f",
                              where)
        if len(plateau) != 3 or plateau[1:].min() < 0:
            raise SnapshotError("the record 'plateau' should be [minimum loss, iteration of the "
                                f"last event, step], not {plateau.tolist()}", **where)
        data = state_data(self, st, where)
        weights = state_weights(self, st, state_path)
        # every record checked: now change the solver (the weights are checked as they load)
        try:
            load_weights(self.net, weights[0], strict=True, data=weights[1])
        except SnapshotError as e:
            raise SnapshotError(f"{e.message} (the weights file of the solver state "
                                f"{state_path})", file=e.file) from None
        for j, s in enumerate(self.state):
            for k in s:
                s[k][...] = self.backend.asarray(history[j][k], s[k].dtype)
        self.iter = it
        self.losses.clear()
        self.losses.extend(float(v) for v in losses)
        if self.losses:
            self.smoothed_loss = sum(self.losses) / len(self.losses)
        if self.plateau is not None:
            self.plateau = Plateau(float(plateau[0]), int(plateau[1]), int(plateau[2]))
        for layer, saved in data:
            try:
                layer.load_state_dict(saved)
            except (ValueError, TypeError, KeyError, IndexError) as e:
                raise SnapshotError(f"the data record of layer '{layer.name}' does not fit this "
                                    f"net's layer: {e}", **where) from None
        # last: loading a record may draw from the generator (HDF5Data reopening its current
        # file shuffles that file's rows before the saved order replaces them)
        self.rng.bit_generator.state = rng.bit_generator.state
        self.log.info(f"Resumed from {state_path} at iteration {self.iter}")
        if self.sp.max_iter and self.iter >= self.sp.max_iter:
            self.log.warn(f"the state is at iteration {self.iter}, max_iter is "
                          f"{self.sp.max_iter}: nothing is left to train (raise max_iter)")
