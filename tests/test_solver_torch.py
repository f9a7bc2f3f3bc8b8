"""Solver trajectories against ``torch.optim`` (differential tests, float64, CPU).

The same tiny net is built twice, from the same initial weights:

* netspec: Input (4×10) → InnerProduct(5) → ReLU → InnerProduct(3) → EuclideanLoss vs an Input
  target;
* torch: ``nn.Linear(10, 5)`` → ``relu`` → ``nn.Linear(5, 3)``, loss Σ(y − t)²/(2N), N = 4
  (Caffe's EuclideanLoss).

Both see the same random batches for ``STEPS`` steps and every weight is compared after every
step. The blobs carry non-trivial multipliers (MULTS) so the mapping of ``lr_mult``/``decay_mult``
onto torch parameter groups is checked as well: a blob with multipliers (a, b) is one torch group
with ``lr = base_lr·a`` and (coupled decay) ``weight_decay = λ·b``.

Where Caffe's form and torch's differ (momentum under a schedule, Adam's ε, decoupled decay's
order), the test states the exact relation and checks netspec against a hand-written NumPy
reference of Caffe's form (gradients from torch autograd, update written out here) — never by
loosening a tolerance until the two agree.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="the differential tests need PyTorch "
                                            "(pip install -e '.[compare]')")

from netspec.backend import Backend  # noqa: E402
from netspec.log import CaffeLog  # noqa: E402
from netspec.solvers import Solver  # noqa: E402
from netspec.spec import parse_net  # noqa: E402
from netspec.spec.solver import SolverParameter  # noqa: E402

STEPS = 5
BATCH, N_IN, N_HID, N_OUT = 4, 10, 5, 3
#: (lr_mult, decay_mult) of every blob; 'ip1/0' is ip1's weight, 'ip1/1' its bias
MULTS = {"ip1/0": (1.0, 1.0), "ip1/1": (2.0, 0.0), "ip2/0": (3.0, 2.0), "ip2/1": (1.0, 1.0)}
KEYS = tuple(MULTS)
#: tight: both sides compute the same float64 expression, possibly in another order
TIGHT = 1e-11

_rng = np.random.default_rng(20240531)
DATA = _rng.normal(size=(STEPS, BATCH, N_IN))
TARGET = _rng.normal(size=(STEPS, BATCH, N_OUT))


# -- the two nets ------------------------------------------------------------------------------
def _ip(name, bottom, n, mults):
    return {"name": name, "type": "InnerProduct", "bottom": bottom, "top": name,
            "param": [dict(zip(("lr_mult", "decay_mult"), mults[f"{name}/{i}"])) for i in (0, 1)],
            "inner_product_param": {"num_output": n, "weight_filler": {"type": "gaussian", "std": 0.5},
                                    "bias_filler": {"type": "gaussian", "std": 0.1}}}


def tiny_net(mults=MULTS) -> dict:
    return {"name": "tiny", "layer": [
        {"name": "data", "type": "Input", "top": "data", "input_param": {"shape": {"dim": [BATCH, N_IN]}}},
        {"name": "target", "type": "Input", "top": "target", "input_param": {"shape": {"dim": [BATCH, N_OUT]}}},
        _ip("ip1", "data", N_HID, mults),
        {"name": "relu1", "type": "ReLU", "bottom": "ip1", "top": "ip1"},
        _ip("ip2", "ip1", N_OUT, mults),
        {"name": "loss", "type": "EuclideanLoss", "bottom": ["ip2", "target"], "top": "loss"},
    ]}


def make_solver(settings: dict, mults=MULTS) -> Solver:
    sp = SolverParameter.model_validate({"net": "unused.yaml", "random_seed": 7, **settings})
    return Solver(sp, backend=Backend(np, np.float64), net_param=parse_net(tiny_net(mults)),
                  log=CaffeLog(quiet=True))


def weights_of(solver: Solver) -> dict[str, np.ndarray]:
    named = solver.net.named_params()
    return {k: named[k].data.copy() for k in KEYS}


def netspec_step(solver: Solver, t: int) -> dict[str, np.ndarray]:
    solver.net.blobs["data"].data[...] = DATA[t]
    solver.net.blobs["target"].data[...] = TARGET[t]
    solver.step_once()
    return weights_of(solver)


def run_netspec(settings: dict, steps: int = STEPS, mults=MULTS):
    """(initial weights, [weights after step 1..steps]) of a netspec run."""
    solver = make_solver(settings, mults)
    init = weights_of(solver)
    return init, [netspec_step(solver, t) for t in range(steps)]


class TorchNet(torch.nn.Module):
    def __init__(self, w: dict[str, np.ndarray]):
        super().__init__()
        self.ip1 = torch.nn.Linear(N_IN, N_HID, dtype=torch.float64)
        self.ip2 = torch.nn.Linear(N_HID, N_OUT, dtype=torch.float64)
        self.load(w)

    def load(self, w: dict[str, np.ndarray]) -> None:
        with torch.no_grad():
            for key, p in zip(KEYS, self.blobs()):
                p.copy_(torch.from_numpy(w[key]))

    def blobs(self):  # in KEYS order
        return [self.ip1.weight, self.ip1.bias, self.ip2.weight, self.ip2.bias]

    def weights(self) -> dict[str, np.ndarray]:
        return {k: p.detach().numpy().copy() for k, p in zip(KEYS, self.blobs())}

    def loss(self, t: int):
        x, target = torch.from_numpy(DATA[t]), torch.from_numpy(TARGET[t])
        y = self.ip2(torch.relu(self.ip1(x)))
        return ((y - target) ** 2).sum() / (2 * BATCH)  # Caffe's EuclideanLoss

    def backward(self, t: int) -> None:
        self.zero_grad(set_to_none=False)
        self.loss(t).backward()


def groups(model: TorchNet, base_lr: float, wd=None) -> list[dict]:
    """One torch parameter group per blob: lr = base_lr·lr_mult; ``wd(lr_mult, decay_mult)``."""
    out = []
    for key, p in zip(KEYS, model.blobs()):
        a, b = MULTS[key]
        g = {"params": [p], "lr": base_lr * a}
        if wd is not None:
            g["weight_decay"] = wd(a, b)
        out.append(g)
    return out


def run_torch(init, make_opt, steps: int = STEPS, lr_factor=None, before_step=None):
    """Weights after each step of ``make_opt(model)``; ``lr_factor(it)`` drives a LambdaLR;
    ``before_step(opt, it)`` may adjust the optimizer between backward and step."""
    model = TorchNet(init)
    opt = make_opt(model)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_factor) if lr_factor else None
    out = []
    for t in range(steps):
        model.backward(t)
        if before_step:
            before_step(opt, t)
        opt.step()
        if sched:
            sched.step()
        out.append(model.weights())
    return out


def grads_at(w: dict[str, np.ndarray], t: int) -> dict[str, np.ndarray]:
    """∂loss/∂W at weights ``w`` on batch ``t`` (torch autograd; the reference's only use of torch)."""
    model = TorchNet(w)
    model.backward(t)
    return {k: p.grad.numpy().copy() for k, p in zip(KEYS, model.blobs())}


def run_reference(init, update, steps: int = STEPS, state=None):
    """A hand-written trajectory: ``update(key, w, g, state[key], it)`` returns the new weight;
    ``state`` (a dict, filled here) lets the caller read the per-blob state afterwards."""
    w = {k: v.copy() for k, v in init.items()}
    state = {} if state is None else state
    state.update({k: {} for k in KEYS})
    out = []
    for t in range(steps):
        g = grads_at(w, t)
        w = {k: update(k, w[k], g[k], state[k], t) for k in KEYS}
        out.append({k: v.copy() for k, v in w.items()})
    return out


def max_rel_dev(got, want) -> float:
    """Largest |got − want| / max(|want|, 1e-3) over all blobs and steps."""
    return max(float(np.max(np.abs(a[k] - b[k]) / np.maximum(np.abs(b[k]), 1e-3)))
               for a, b in zip(got, want, strict=True) for k in KEYS)


def norm_dev(got, want) -> float:
    """Largest ‖got − want‖ / ‖want‖ over blobs and steps (for trajectories that do part)."""
    return max(float(np.linalg.norm(a[k] - b[k]) / np.linalg.norm(b[k]))
               for a, b in zip(got, want, strict=True) for k in KEYS)


def assert_same(got, want, rtol: float, what: str) -> float:
    assert len(got) == len(want)
    for step, (a, b) in enumerate(zip(got, want), start=1):
        for k in KEYS:
            np.testing.assert_allclose(a[k], b[k], rtol=rtol, atol=rtol * 1e-3,
                                       err_msg=f"{what}: blob {k} after step {step}")
    worst = max_rel_dev(got, want)
    print(f"{what}: largest relative deviation {worst:.2e}")  # shown with pytest -s
    return worst


def step_lr(base_lr: float, gamma: float, stepsize: int):
    """netspec's ``lr_policy: step`` and the same factors for torch's LambdaLR."""
    return (lambda it: base_lr * gamma ** (it // stepsize)), (lambda it: gamma ** (it // stepsize))


# -- SGD with momentum, Nesterov ---------------------------------------------------------------
def test_sgd_momentum_coupled_l2_equals_torch_sgd():
    """``type: SGD, momentum μ, regularization_type: L2, weight_decay λ`` at a fixed lr
    = ``torch.optim.SGD(lr, momentum=μ, weight_decay=λ)`` (groups: lr·lr_mult, λ·decay_mult).

    Caffe: v ← μv + lr·(g + λW); W ← W − v.  torch: b ← μb + (g + λW); W ← W − lr·b.
    With a constant lr, v = lr·b at every step, so the trajectories are the same.
    """
    lr, mu, lam = 0.05, 0.9, 0.01
    init, ns = run_netspec({"base_lr": lr, "momentum": mu, "weight_decay": lam,
                            "regularization_type": "L2"})
    th = run_torch(init, lambda m: torch.optim.SGD(groups(m, lr, lambda a, b: lam * b), lr=lr,
                                                   momentum=mu, foreach=False))
    assert_same(ns, th, TIGHT, "SGD+L2 vs torch SGD")


@pytest.mark.parametrize("rule", ["SGD", "Nesterov"])
def test_momentum_under_lr_schedule_differs_from_torch(rule):
    """With a schedule the two momentum forms part: Caffe's history carries the old rate.

    Caffe: v_t = μ·v_{t−1} + lr_t·g_t, i.e. v_t = lr_t·b_t with
    b_t = μ·(lr_{t−1}/lr_t)·b_{t−1} + g_t, whereas torch's buffer is b_t = μ·b_{t−1} + g_t.
    So (i) netspec matches a NumPy reference of Caffe's form, (ii) plain torch SGD + LambdaLR
    drifts away after the first drop, and (iii) torch matches again when its momentum buffer is
    rescaled by lr_{t−1}/lr_t before each step (for Nesterov too: Caffe's
    (1+μ)·v_t − μ·v_{t−1} = lr_t·(g_t + μ·b_t) with that b).
    """
    base_lr, mu, gamma, stepsize = 0.05, 0.9, 0.2, 2
    lr, factor = step_lr(base_lr, gamma, stepsize)
    settings = {"type": rule, "base_lr": base_lr, "momentum": mu, "lr_policy": "step",
                "gamma": gamma, "stepsize": stepsize}
    init, ns = run_netspec(settings)

    def caffe(key, w, g, st, it):
        rate = lr(it) * MULTS[key][0]
        v_old = st.get("v", np.zeros_like(w))
        st["v"] = mu * v_old + rate * g
        step = st["v"] if rule == "SGD" else (1 + mu) * st["v"] - mu * v_old
        return w - step

    assert_same(ns, run_reference(init, caffe), TIGHT, f"{rule} vs Caffe reference")

    make = lambda m: torch.optim.SGD(groups(m, base_lr), lr=base_lr, momentum=mu,  # noqa: E731
                                     nesterov=rule == "Nesterov", foreach=False)
    plain = run_torch(init, make, lr_factor=factor)
    print(f"{rule} vs plain torch under lr_policy step: blob-norm deviation {norm_dev(ns, plain):.2e}")
    assert norm_dev(ns, plain) > 1e-3  # they do differ, and not by rounding

    def rescale(opt, it):
        if it == 0:
            return
        for group in opt.param_groups:
            for p in group["params"]:
                opt.state[p]["momentum_buffer"] *= lr(it - 1) / lr(it)

    assert_same(ns, run_torch(init, make, lr_factor=factor, before_step=rescale), TIGHT,
                f"{rule} vs torch with rescaled buffer")


def test_nesterov_equals_torch_nesterov():
    """``type: Nesterov`` at a fixed lr = ``torch.optim.SGD(lr, momentum=μ, nesterov=True,
    weight_decay=λ)``.

    Caffe: v' = μv + lr·g;  Δ = (1+μ)v' − μv = lr·g + μ·v'.
    torch: b' = μb + g;  Δ = lr·(g + μ·b').  With v = lr·b the two Δ are the same.
    """
    lr, mu, lam = 0.05, 0.9, 0.01
    init, ns = run_netspec({"type": "Nesterov", "base_lr": lr, "momentum": mu, "weight_decay": lam,
                            "regularization_type": "L2"})
    th = run_torch(init, lambda m: torch.optim.SGD(groups(m, lr, lambda a, b: lam * b), lr=lr,
                                                   momentum=mu, nesterov=True, foreach=False))
    assert_same(ns, th, TIGHT, "Nesterov vs torch")


# -- Adam ----------------------------------------------------------------------------------------
B1, B2 = 0.9, 0.999


def caffe_adam(lr, delta, lam=0.0, decoupled=0.0):
    """Caffe's Adam (bias correction folded into the rate, δ outside √v), with coupled L2 ``lam``
    or a decoupled shrink ``decoupled``·decay_mult·lr_t/base_lr after the step (netspec's AdamW).

    It also sums, per element, ``eps_gap``: how far torch's ε placement would move each step
    from the same state, |Δ_caffe − Δ_torch| = rate·A·|m|·δ(1 − s)/((√v + δ)(√v + δ·s)) with
    s = √(1−β₂ᵗ), A = s/(1−β₁ᵗ) (torch's √v̂ + ε = (√v + ε·s)/s).
    """
    base = lr(0)

    def update(key, w, g, st, it):
        a, b = MULTS[key]
        t = it + 1
        g = g + lam * b * w
        st["m"] = B1 * st.get("m", 0.0) + (1 - B1) * g
        st["v"] = B2 * st.get("v", 0.0) + (1 - B2) * g * g
        s = math.sqrt(1 - B2 ** t)
        rate = lr(it) * a * s / (1 - B1 ** t)
        root = np.sqrt(st["v"])
        st["eps_gap"] = st.get("eps_gap", 0.0) + rate * np.abs(st["m"]) * delta * (1 - s) / (
            (root + delta) * (root + delta * s))
        st.setdefault("eps_gaps", []).append(st["eps_gap"])  # after step 1, 2, …
        w = w - rate * st["m"] / (root + delta)
        return w * (1 - decoupled * b * lr(it) / base)

    return update


@pytest.mark.parametrize("lam", [0.0, 0.01])
def test_adam_equals_torch_adam_with_tiny_delta(lam):
    """``type: Adam`` (β₁ = momentum, β₂ = momentum2, δ = delta, optional coupled L2 λ)
    vs ``torch.optim.Adam(lr, betas=(β₁, β₂), eps=δ, weight_decay=λ)``.

    Caffe: Δ = lr·√(1−β₂ᵗ)/(1−β₁ᵗ)·m/(√v + δ);  torch: Δ = lr·m̂/(√v̂ + ε)
    = lr·√(1−β₂ᵗ)/(1−β₁ᵗ)·m/(√v + ε·√(1−β₂ᵗ)). Only ε's weight differs. netspec equals the NumPy
    reference of Caffe's form to rounding; against torch (ε = δ = 1e-8) every element stays within
    twice the summed per-step gap of that ε placement (derived in ``caffe_adam``: it is large only
    where |g| is not ≫ δ/√(1−β₂) ≈ 3e-7), and each blob within 1e-5 in relative L2 norm.
    """
    lr, delta = 0.01, 1e-8
    settings = {"type": "Adam", "base_lr": lr, "momentum": B1, "momentum2": B2, "delta": delta}
    if lam:
        settings.update(weight_decay=lam, regularization_type="L2")
    init, ns = run_netspec(settings)
    state: dict = {}
    ref = run_reference(init, caffe_adam(lambda it: lr, delta, lam), state=state)
    assert_same(ns, ref, TIGHT, "Adam vs Caffe reference")
    th = run_torch(init, lambda m: torch.optim.Adam(groups(m, lr, lambda a, b: lam * b), lr=lr,
                                                    betas=(B1, B2), eps=delta, foreach=False))
    worst_norm = 0.0
    for t in range(STEPS):
        for k in KEYS:
            gap = np.abs(ns[t][k] - th[t][k])
            assert np.all(gap <= 2 * state[k]["eps_gaps"][t] + 1e-13), (k, t)
            rel = float(np.linalg.norm(ns[t][k] - th[t][k]) / np.linalg.norm(th[t][k]))
            assert rel <= 1e-5, (k, t, rel)
            worst_norm = max(worst_norm, rel)
    print(f"Adam (λ={lam}) vs torch Adam, ε = δ = 1e-8: largest relative deviation "
          f"{max_rel_dev(ns, th):.2e} elementwise, {worst_norm:.2e} in blob norm")


def test_adam_epsilon_placement_mapped_per_step():
    """With a large δ the ε placement shows, and the exact mapping removes it.

    Caffe's δ outside √v equals torch's ε outside √v̂ when ε_t = δ/√(1−β₂ᵗ); torch reads
    ``eps`` from the group at every step, so setting it before step t reproduces Caffe's
    trajectory to rounding, while a constant ε = δ does not.
    """
    lr, delta = 0.01, 1e-2
    settings = {"type": "Adam", "base_lr": lr, "momentum": B1, "momentum2": B2, "delta": delta}
    init, ns = run_netspec(settings)
    make = lambda m: torch.optim.Adam(groups(m, lr), lr=lr, betas=(B1, B2), eps=delta,  # noqa: E731
                                      foreach=False)

    def mapped_eps(opt, it):
        for group in opt.param_groups:
            group["eps"] = delta / math.sqrt(1 - B2 ** (it + 1))

    plain = run_torch(init, make)
    print(f"Adam δ = 1e-2 vs torch, constant ε = δ: blob-norm deviation {norm_dev(ns, plain):.2e}")
    assert norm_dev(ns, plain) > 1e-4
    assert_same(ns, run_torch(init, make, before_step=mapped_eps), TIGHT, "Adam vs torch, mapped ε")


# -- AdamW and decoupled decay ------------------------------------------------------------------
@pytest.mark.parametrize("policy", ["fixed", "step"])
def test_adamw_one_step_differs_from_torch_by_d_delta(policy):
    """netspec ``type: AdamW, weight_decay λ`` vs ``torch.optim.AdamW(lr, weight_decay=wd)``,
    one step at a time from the same weights and moments.

    netspec: W' = (W − Δ)(1 − d), d = λ·decay_mult·lr_t/base_lr (no lr_mult);
    torch:   W' = W(1 − d) − Δ,   d = lr_t·lr_mult·wd.
    Same d when wd = λ·decay_mult/(base_lr·lr_mult) (λ = base_lr·wd for unit multipliers), and
    then W'_netspec = W'_torch + d·Δ exactly, with Δ = W(1 − d) − W'_torch read off torch's step
    (ε mapped per step as in the Adam test, so Δ is the same on both sides). Under
    ``lr_policy: step`` torch's decay uses the scheduled lr_t·wd and netspec λ·lr_t/base_lr: the
    same thing for that wd.
    """
    base_lr, lam, delta = 0.01, 1e-3, 1e-8  # torch wd = λ/base_lr = 0.1 for unit multipliers
    gamma, stepsize = 0.3, 2
    lr, _ = step_lr(base_lr, gamma if policy == "step" else 1.0, stepsize)
    extra = {"lr_policy": "step", "gamma": gamma, "stepsize": stepsize} if policy == "step" else {}
    settings = {"type": "AdamW", "base_lr": base_lr, "momentum": B1, "momentum2": B2, "delta": delta,
                "weight_decay": lam, "regularization_type": "decoupled", **extra}
    solver = make_solver(settings)
    model = TorchNet(weights_of(solver))
    opt = torch.optim.AdamW(groups(model, base_lr, lambda a, b: lam * b / (base_lr * a)), lr=base_lr,
                            betas=(B1, B2), eps=delta, foreach=False)
    sched = torch.optim.lr_scheduler.StepLR(opt, stepsize, gamma) if policy == "step" else None
    seen_d, term, resid = set(), 0.0, 0.0
    for t in range(STEPS):
        w = model.weights()
        for key, p in solver.net.named_params().items():  # same W; same g history ⇒ same m, v
            p.data[...] = w[key]
        ns = netspec_step(solver, t)
        model.backward(t)
        for group in opt.param_groups:
            group["eps"] = delta / math.sqrt(1 - B2 ** (t + 1))
        ds = [group["lr"] * group["weight_decay"] for group in opt.param_groups]  # torch's d
        opt.step()
        if sched:
            sched.step()
        th = model.weights()
        for key, d in zip(KEYS, ds):
            np.testing.assert_allclose(d, lam * MULTS[key][1] * lr(t) / base_lr, rtol=1e-14)
            seen_d.add(round(d, 12))
            step = w[key] * (1 - d) - th[key]
            np.testing.assert_allclose(ns[key], th[key] + d * step, rtol=1e-12, atol=1e-15,
                                       err_msg=f"{key} after step {t + 1}")
            term = max(term, float(np.max(np.abs(d * step))))
            resid = max(resid, float(np.max(np.abs(ns[key] - th[key] - d * step))))
    print(f"AdamW lockstep ({policy}): |d·Δ| up to {term:.2e}, residual after it {resid:.2e}")
    if policy == "step":
        assert len(seen_d - {0.0}) >= 3  # the decay followed the schedule (two blobs × drops)


def test_adamw_trajectory_is_torch_adam_then_shrink():
    """Free-running AdamW over STEPS steps.

    netspec's AdamW is torch's pieces in the other order: ``torch.optim.Adam`` (no decay) and then
    ``W.mul_(1 − d)`` after each step, d = λ·decay_mult·lr_t/base_lr — equal to rounding (ε mapped
    per step as in the Adam test). Plain ``torch.optim.AdamW`` at the matched wd parts from it by
    more than 1e-5: the d·Δ term of every step, which the lockstep test above pins exactly. (Reusing
    torch's Δ sequence on netspec's trajectory is not exact over several steps: Adam's Δ depends on
    g through m/√v, with ∂Δ/∂g ≈ rate/|g|, so the O(d·Δ) weight gap moves later steps by a
    comparable amount.) netspec also equals the NumPy reference of its own form to rounding.
    """
    base_lr, lam, delta = 0.02, 4e-3, 1e-8  # d = 4e-3 per step (torch wd 0.2)
    settings = {"type": "AdamW", "base_lr": base_lr, "momentum": B1, "momentum2": B2, "delta": delta,
                "weight_decay": lam, "regularization_type": "decoupled"}
    init, ns = run_netspec(settings)
    fixed = lambda it: base_lr  # noqa: E731
    assert_same(ns, run_reference(init, caffe_adam(fixed, delta, decoupled=lam)), TIGHT,
                "AdamW vs reference")

    def mapped_eps(opt, it):
        for group in opt.param_groups:
            group["eps"] = delta / math.sqrt(1 - B2 ** (it + 1))

    class AdamThenShrink(torch.optim.Adam):
        def step(self, closure=None):
            super().step(closure)
            with torch.no_grad():
                for key, group in zip(KEYS, self.param_groups):
                    group["params"][0].mul_(1 - lam * MULTS[key][1])

    after = run_torch(init, lambda m: AdamThenShrink(groups(m, base_lr), lr=base_lr, betas=(B1, B2),
                                                     eps=delta, foreach=False), before_step=mapped_eps)
    assert_same(ns, after, TIGHT, "AdamW vs torch Adam + shrink after")
    adamw = run_torch(init, lambda m: torch.optim.AdamW(
        groups(m, base_lr, lambda a, b: lam * b / (base_lr * a)), lr=base_lr, betas=(B1, B2),
        eps=delta, foreach=False), before_step=mapped_eps)
    print(f"AdamW vs plain torch AdamW (free-running): blob-norm deviation {norm_dev(ns, adamw):.2e}")
    assert norm_dev(ns, adamw) > 1e-5


def test_decoupled_vs_coupled_plain_sgd_second_order():
    """Plain SGD: coupled L2 λ₂ vs decoupled λ_d at matched strength, from the same W.

    coupled:   W' = W − r·(g + λ₂·m·W) = W − r·g − s_c·W,          s_c = r·λ₂·m, r = lr·lr_mult
    decoupled: W' = (W − r·g)(1 − s_d) = W − r·g − s_d·W + s_d·r·g,  s_d = λ_d·m·lr/base_lr
    so W'_dec − W'_cpl = (s_c − s_d)·W + s_d·r·g. Matched strength (s_c = s_d) needs
    λ_d = base_lr·lr_mult·λ₂ — one global λ_d matches only the blobs of one lr_mult (netspec's
    decoupled shrink ignores lr_mult); there the difference is the second-order s_d·r·g
    = lr²·λ₂·m·g. Checked exactly, one step at a time from the same weights, for every blob,
    and the free-running trajectories stay within the sum of those terms.
    """
    lr, lam2 = 0.1, 0.05
    lam_d = lr * lam2  # matched for lr_mult 1 blobs
    cpl = make_solver({"base_lr": lr, "weight_decay": lam2, "regularization_type": "L2"})
    dec = make_solver({"base_lr": lr, "weight_decay": lam_d, "regularization_type": "decoupled"})
    term = resid = 0.0
    for t in range(STEPS):
        w = weights_of(cpl)
        for key, p in dec.net.named_params().items():
            p.data[...] = w[key]
        g = grads_at(w, t)
        a, b = netspec_step(cpl, t), netspec_step(dec, t)
        for k, (lm, dm) in MULTS.items():
            r, s_c, s_d = lr * lm, lr * lm * lam2 * dm, lam_d * dm
            want = (s_c - s_d) * w[k] + s_d * r * g[k]
            np.testing.assert_allclose(b[k] - a[k], want, rtol=1e-9, atol=1e-16,
                                       err_msg=f"{k} step {t + 1}")
            resid = max(resid, float(np.max(np.abs(b[k] - a[k] - want))))
            if lm == 1:
                term = max(term, float(np.max(np.abs(want))))
                np.testing.assert_allclose(b[k] - a[k], lr * lr * lam2 * dm * g[k], rtol=1e-9,
                                           atol=1e-16)
    # free-running, every blob at lr_mult 1 (all matched): the trajectories part by about the
    # sum of those terms, Σ_t lr²·λ₂·‖m·g_t‖ (second order; the gap also spreads to undecayed
    # blobs through the gradients, so it is bounded over all blobs together)
    unit = {k: (1.0, dm) for k, (_, dm) in MULTS.items()}
    init, traj_c = run_netspec({"base_lr": lr, "weight_decay": lam2, "regularization_type": "L2"},
                               mults=unit)
    _, traj_d = run_netspec({"base_lr": lr, "weight_decay": lam_d, "regularization_type": "decoupled"},
                            mults=unit)
    bound = ratio = 0.0
    for t, wc in enumerate([init] + traj_c[:-1]):
        g = grads_at(wc, t)
        bound += lr * lr * lam2 * math.sqrt(sum(float(np.sum((unit[k][1] * g[k]) ** 2)) for k in KEYS))
        gap = math.sqrt(sum(float(np.sum((traj_d[t][k] - traj_c[t][k]) ** 2)) for k in KEYS))
        assert 0 < gap <= 1.5 * bound, (t, gap, bound)
        ratio = max(ratio, gap / bound)
    print(f"decoupled vs L2 (plain SGD), one step: lr²λ₂·m·g up to {term:.2e}, residual after the "
          f"formula {resid:.2e}; free-running gap/Σ lr²λ‖g‖ up to {ratio:.2f}")


# -- RMSProp, AdaGrad, AdaDelta ------------------------------------------------------------------
@pytest.mark.parametrize("lam", [0.0, 0.01])
def test_rmsprop_equals_torch_rmsprop(lam):
    """``type: RMSProp, rms_decay ρ, delta δ`` (coupled L2 λ) = ``torch.optim.RMSprop(lr,
    alpha=ρ, eps=δ, weight_decay=λ)`` (momentum 0, centered False).

    Both: h ← ρh + (1−ρ)g²; Δ = lr·g/(√h + δ) — ε outside the square root in both (TensorFlow 1's
    RMSPropOptimizer puts it inside: √(h + ε)).
    """
    lr, rho, delta = 0.01, 0.9, 1e-4
    settings = {"type": "RMSProp", "base_lr": lr, "rms_decay": rho, "delta": delta}
    if lam:
        settings.update(weight_decay=lam, regularization_type="L2")
    init, ns = run_netspec(settings)
    th = run_torch(init, lambda m: torch.optim.RMSprop(groups(m, lr, lambda a, b: lam * b), lr=lr,
                                                       alpha=rho, eps=delta, foreach=False))
    assert_same(ns, th, TIGHT, "RMSProp vs torch")


def test_adagrad_equals_torch_adagrad():
    """``type: AdaGrad, delta δ`` (coupled L2 λ) = ``torch.optim.Adagrad(lr, eps=δ,
    weight_decay=λ, initial_accumulator_value=0, lr_decay=0)``: h ← h + g²; Δ = lr·g/(√h + δ)."""
    lr, delta, lam = 0.05, 1e-6, 0.01
    init, ns = run_netspec({"type": "AdaGrad", "base_lr": lr, "delta": delta, "weight_decay": lam,
                            "regularization_type": "L2"})
    th = run_torch(init, lambda m: torch.optim.Adagrad(groups(m, lr, lambda a, b: lam * b), lr=lr,
                                                       eps=delta, lr_decay=0,
                                                       initial_accumulator_value=0, foreach=False))
    assert_same(ns, th, TIGHT, "AdaGrad vs torch")


def test_adadelta_equals_torch_adadelta():
    """``type: AdaDelta, momentum ρ, delta δ, base_lr lr`` = ``torch.optim.Adadelta(lr, rho=ρ,
    eps=δ)``.

    Both: h ← ρh + (1−ρ)g²; u = g·√(s + δ)/√(h + δ) (δ inside both roots); s ← ρs + (1−ρ)u²;
    Δ = lr·u. Both multiply by the learning rate (Zeiler's paper has none: lr = 1); lr = 0.5 here
    so a missing factor would show.
    """
    lr, rho, delta, lam = 0.5, 0.95, 1e-6, 0.01
    init, ns = run_netspec({"type": "AdaDelta", "base_lr": lr, "momentum": rho, "delta": delta,
                            "weight_decay": lam, "regularization_type": "L2"})
    th = run_torch(init, lambda m: torch.optim.Adadelta(groups(m, lr, lambda a, b: lam * b), lr=lr,
                                                        rho=rho, eps=delta, foreach=False))
    assert_same(ns, th, TIGHT, "AdaDelta vs torch")
