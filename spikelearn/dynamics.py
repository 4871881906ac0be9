r"""Differentiable linearised dynamics of the package's models: tangent maps, QR Lyapunov exponents, flossing.

This module sits below the rules layer (it imports :mod:`spikelearn.models` and :mod:`spikelearn.neurons` only) so
that both :mod:`spikelearn.rules.flossing` and :mod:`spikelearn.analysis` can build on it (ALGORITHMS.md §7).

**Tangent map.** A model run from a given state is a map ``s^t = F(s^{t-1}, x^t)`` of its continuous state ``s``
(``h`` or ``r`` for rate networks, ``(v, a)`` for spiking ones; readout filters do not feed back and are left
out). :func:`linearise` runs the model once and returns a :class:`Linearisation` whose ``apply(t, Q)`` computes
``J_t Q`` with ``J_t = ∂s^{t}/∂s^{t-1}`` (0-based ``t``: the step that consumes ``x[t]``) in closed form (§7.1):

* rate R1 / R3 (``pre_activation``, ``relu_lif``): ``J = diag(leak) + diag(c)(W_rec diag(f'(h^{t-1} − thr)) + G̃)``;
* ``richlazy``: ``J = (diag(leak) + diag(c) W_rec) diag(f'(h^{t-1})) + diag(c) G̃``;
* ``murray`` (state ``r``; ``(r, h)`` with gap junctions): ``J = diag(1−γ) + diag(γ f'(u^t)) W_rec``;
* spiking (state ``(v, a, i)``, ``a`` only with adaptive neurons, ``i`` only with current-based synapses),
  ``δz = ψ^{t-1} (δv − β δa)``: ``δi' = α_s δi + c W_rec δz``, ``δv' = α δv + δi' + c G̃ δv − r_on v_th δz``
  (without synapses ``δi' = c W_rec δz`` is not a state), ``δa' = ρ δa + c_a δz``; with ``reset="zero"`` the leak is
  ``α (1 − z^{t-1})`` and the reset term ``−r_on α v^{t-1} δz`` (spike ``z`` a constant, as in BPTT)

with ``c`` the model's per-neuron input factor, ``G̃ = G − diag(G 1)`` the gap-junction Laplacian and ``r_on`` the
reset derivative switch. Every factor is computed from the (differentiable) trajectory and effective weights, so
autograd through :func:`qr_log_growth` is the gradient of the exponents (gradient flossing, §7.2).

**Spiking networks.** ``jacobian="surrogate"`` evaluates the Jacobian with the model's pseudo-derivative ψ along
the actual spiking trajectory (ψ is detached, exactly as in surrogate BPTT; the initial spikes ``state0.z`` are part
of the given state, so ψ = 0 for the first step). ``jacobian="rate"`` replaces every spike by its escape-noise
expectation ``p = σ((v − A)/(v_th·escape_width))`` (logistic σ, no refractoriness, expected reset ``−v_th p``) and
takes the exact Jacobian of that smooth mean-field map. See :mod:`spikelearn.analysis.lyapunov` for what the
exponents mean.
"""

from __future__ import annotations

import math
from typing import Any, Literal, NamedTuple, TypedDict, overload

import torch
from torch import Tensor, nn

from spikelearn.models import RateRNN, SpikingRNN, time_linear
from spikelearn.neurons.rate import activation_derivative
from spikelearn.weights import SPARSE, SparseWeights

__all__ = ["Linearisation", "linearise", "QRGrowth", "qr_log_growth", "random_orthonormal",
           "default_transient", "dynamics_parameters", "flossing_loss", "flossing_grads", "local_flossing_grads",
           "FlossingConfig"]

JacobianKind = Literal["surrogate", "rate"]
READOUT_PARAMETERS = ("theta_out", "b_out")


def default_transient(n_steps: int) -> int:
    """Engelken's transient ``10 + ⌈T/10⌉`` steps (§7.1), capped so that at least one step is counted."""
    return max(0, min(10 + math.ceil(n_steps / 10), n_steps - 1))


def random_orthonormal(batch: int, n: int, k: int, *, seed: int = 0, dtype: torch.dtype = torch.float64,
                       device: Any = None) -> Tensor:
    """``(batch, n, k)`` matrices with orthonormal columns from a fixed seed (QR of a Gaussian draw)."""
    if not 1 <= k <= n:
        raise ValueError(f"k must be in [1, {n}], got {k}")
    g = torch.Generator().manual_seed(int(seed))
    A = torch.randn(batch, n, k, generator=g, dtype=torch.float64)
    Q, _ = torch.linalg.qr(A)
    return Q.to(dtype=dtype, device=device)


def dynamics_parameters(model: nn.Module) -> list[str]:
    """Names of the trainable parameters that act on the dynamics (all but the readout ``theta_out``, ``b_out``)."""
    return [n for n, p in model.named_parameters() if p.requires_grad and n not in READOUT_PARAMETERS]


# ----------------------------------------------------------------------------------------------- tangent maps
class Linearisation:
    """Jacobian factors of one run (see module docstring); all fields time-first ``(T, B, N)``.

    Attributes:
        kind: ``"rate_pre"`` (R1/R3 relu_lif), ``"rate_richlazy"``, ``"murray"``, ``"murray_gap"``, ``"spiking"``.
        n: number of neurons N; n_state: tangent-space dimension (N or 2N); n_steps: T; batch: B.
        dt_ms: model time step. W: ``(N, N)`` effective ``W_rec`` (in the graph when grad is enabled).
        post: ``(N,)`` or ``(T, B, N)`` factor ``P`` on the recurrent term (``J ∋ diag(P) W_rec ...``).
        D: ``(T, B, N)`` per-step derivative factors (f' or ψ). Others: per-neuron constants.
        states: ``(T, B, n_state)`` the trajectory ``s^1 … s^T`` in tangent-space coordinates.
    """

    def __init__(self, kind: str, n: int, n_steps: int, batch: int, dt_ms: float, W: Any, D: Tensor,
                 post: Tensor, *, leak: Tensor | None = None, gap: Tensor | None = None, rho: Tensor | None = None,
                 c_a: Tensor | None = None, beta: Tensor | None = None, reset: Tensor | None = None,
                 states: Tensor | None = None, alpha_syn: Tensor | None = None) -> None:
        self.states = states
        self.kind, self.n, self.n_steps, self.batch, self.dt_ms = kind, n, n_steps, batch, float(dt_ms)
        self.W: Any = W  # (N, N) tensor, or SparseWeights with per-edge storage
        self.D, self.post = D, post
        self.leak, self.gap, self.rho, self.c_a, self.beta, self.reset = leak, gap, rho, c_a, beta, reset
        self.adaptive = beta is not None
        self.alpha_syn = alpha_syn  # spiking with current-based synapses: the state has an i block (last)
        self.synaptic = alpha_syn is not None
        if kind == "spiking":
            self.n_state = n * (1 + int(self.adaptive) + int(self.synaptic))
        else:
            self.n_state = 2 * n if kind == "murray_gap" else n

    # -------------------------------------------------------------- J_t Q
    def _post(self, t: int) -> Tensor:
        return self.post if self.post.dim() == 1 else self.post[t]

    def pre(self, t: int, Q: Tensor) -> Tensor:
        """The vector the recurrent weights act on in ``J_t Q``; ``Q (B, n_state, k)`` -> ``(B, N, k)``."""
        n, D = self.n, self.D[t][..., None]
        if self.kind in ("rate_pre", "rate_richlazy"):
            return D * Q
        if self.kind == "murray":
            return Q
        if self.kind == "murray_gap":
            return Q[:, :n]
        # spiking: δz = ψ (δv − β δa)
        if self.adaptive:
            assert self.beta is not None  # adaptive: beta given
            return D * (Q[:, :n] - self.beta[:, None] * Q[:, n:2 * n])
        return D * Q[:, :n]

    def apply(self, t: int, Q: Tensor) -> Tensor:
        """``J_t Q`` for ``Q (B, n_state, k)``; differentiable."""
        n = self.n
        assert self.leak is not None  # every kind has a leak term
        pre = self.pre(t, Q)
        rec = _wmul(self.W, pre)  # (B, N, k)
        P = self._post(t)[..., None]
        if self.kind == "rate_pre":
            out = self.leak[:, None] * Q + P * rec
            if self.gap is not None:
                out = out + P * _wmul(self.gap, Q)
            return out
        if self.kind == "rate_richlazy":
            out = self.leak[:, None] * pre + P * rec
            if self.gap is not None:
                out = out + P * _wmul(self.gap, Q)
            return out
        if self.kind == "murray":
            return self.leak[:, None] * Q + P * rec
        if self.kind == "murray_gap":  # state (r, h): h' = W r + G̃ h, r' = leak r + P h'
            assert self.gap is not None  # murray_gap: gap junctions given
            h_new = rec + _wmul(self.gap, Q[:, n:])
            return torch.cat([self.leak[:, None] * Q[:, :n] + P * h_new, h_new], dim=1)
        # spiking: blocks [v, a (adaptive), i (synaptic)]
        qv = Q[:, :n]
        assert self.reset is not None  # spiking: reset factor given
        rec = P * rec
        if self.synaptic:
            assert self.alpha_syn is not None
            rec = self.alpha_syn[:, None] * Q[:, -n:] + rec  # δi' = α_s δi + c W δz
        dv = _per(self.leak, t) * qv + rec - _per(self.reset, t) * pre
        if self.gap is not None:
            dv = dv + P * _wmul(self.gap, qv)
        blocks = [dv]
        if self.adaptive:
            assert self.rho is not None and self.c_a is not None  # adaptive: rho and c_a given
            blocks.append(self.rho[:, None] * Q[:, n:2 * n] + self.c_a[:, None] * pre)
        if self.synaptic:
            blocks.append(rec)
        return blocks[0] if len(blocks) == 1 else torch.cat(blocks, dim=1)

    def recurrent_post(self, t: int, G: Tensor) -> Tensor:
        """Adjoint of the recurrent injection: ``(B, N, k)`` vectors ``u`` with ``⟨G, J_t Q⟩ = Σ u·(dW pre)``
        for a change ``dW`` of ``W_rec``, given ``G (B, n_state, k)``."""
        n = self.n
        P = self._post(t)[..., None]
        if self.kind == "murray_gap":
            return P * G[:, :n] + G[:, n:]
        if self.kind == "spiking" and self.synaptic:  # the injection enters δi' and, through it, δv'
            return P * (G[:, :n] + G[:, -n:])
        return P * G[:, :n]

    def jacobian(self, t: int, b: int = 0) -> Tensor:
        """Dense ``J_t`` of trajectory ``b`` (``(n_state, n_state)``; for tests and small networks)."""
        eye = torch.eye(self.n_state, dtype=self.W.dtype, device=self.W.device)[None]
        eye = eye.expand(self.batch, -1, -1)
        return self.apply(t, eye)[b]


def _per(f: Tensor, t: int) -> Tensor:
    """A per-neuron factor ``(N,)`` or a per-step one ``(T, B, N)`` as ``(·, N, 1)`` for step ``t``."""
    return f[:, None] if f.dim() == 1 else f[t][..., None]


def _wmul(W: Any, X: Tensor) -> Tensor:
    """``W @ X`` for ``X (B, N, k)`` as one folded ``(B·k, N) @ W^T`` GEMM (frames from QR are column-major,
    so ``X.mT`` is contiguous and no copy is made); per-edge storage through its weight operations."""
    if isinstance(W, SparseWeights):
        return SPARSE.product(W, X.mT).mT
    return torch.matmul(X.mT, W.mT).mT


def _prev(first: Tensor, seq: Tensor) -> Tensor:
    """``[first, seq[0], …, seq[T-2]]``: the value before each step."""
    return torch.cat([first[None], seq[:-1]], dim=0)


def _gap_laplacian(gap: Any) -> Any:
    """``G − diag(G 1)``; per-edge conductances stay per edge (the diagonal joins the edges)."""
    if gap is None:
        return None
    if isinstance(gap, SparseWeights):
        n = gap.shape[0]
        diag = torch.arange(n, device=gap.values.device)
        post, pre = torch.cat([gap.post, diag]), torch.cat([gap.pre, diag])
        key, inv = torch.unique(post * n + pre, return_inverse=True)  # merges existing diagonal entries
        vals = torch.cat([gap.values, -SPARSE.row_sums(gap)])
        merged = vals.new_zeros(key.numel()).index_add(0, inv, vals)
        return SparseWeights(merged, key // n, key % n, (n, n))
    return gap - torch.diag(gap.sum(1))


def linearise(model: nn.Module, x: Tensor, state0: Any = None, *, jacobian: JacobianKind = "surrogate",
              reset_derivative: bool | None = None, escape_width: float = 0.1) -> Linearisation:
    """Run ``model`` on ``x`` from ``state0`` and return the tangent map of the run (module docstring).

    Args:
        model: :class:`~spikelearn.models.RateRNN` or :class:`~spikelearn.models.SpikingRNN`.
        x: ``(T, B, n_in)`` input. state0: initial state (default ``model.init_state(B)``).
        jacobian: spiking only — ``"surrogate"`` (ψ along the spiking trajectory) or ``"rate"`` (escape-noise
            mean-field map; ``escape_width`` in units of ``v_th``).
        reset_derivative: spiking only — keep the reset term ``−v_th δz`` (``r_on = 1``); default: as the model's
            BPTT (``not model.detach_reset``).

    Gradients flow through the trajectory and the effective weights when grad mode is enabled.
    """
    if jacobian not in ("surrogate", "rate"):  # checked for rate models too, where it has no effect
        raise ValueError(f"jacobian must be 'surrogate' or 'rate', got {jacobian!r}")
    if isinstance(model, RateRNN):
        return _linearise_rate(model, x, state0)
    if isinstance(model, SpikingRNN):
        r_on = (not model.detach_reset) if reset_derivative is None else bool(reset_derivative)
        if jacobian == "rate":
            if not escape_width > 0:
                raise ValueError(f"escape_width must be > 0, got {escape_width}")
            return _linearise_spiking_rate(model, x, state0, r_on, float(escape_width))
        return _linearise_spiking(model, x, state0, r_on)
    raise TypeError(f"expected a RateRNN or SpikingRNN, got {type(model).__name__}")


def _linearise_rate(model: RateRNN, x: Tensor, state0: Any) -> Linearisation:
    out = model(x, state=state0, record=True)
    rec = out.record
    T, B = rec.h.shape[:2]
    if state0 is None:
        state0 = model.init_state(B)
    c = model.constants()
    W = model.effective_weights().W_rec
    fp = activation_derivative(model.activation)
    gap = _gap_laplacian(model.gap)
    n = model.n
    if model.form in ("pre_activation", "relu_lif"):
        h_prev = _prev(state0.h.to(rec.h.dtype), rec.h)
        D = fp(h_prev - c.thr) if (c.thr and model.form == "relu_lif") else fp(h_prev)  # thr: relu_lif only
        return Linearisation("rate_pre", n, T, B, model.dt_ms, W, D, c.c_in, leak=c.leak, gap=gap, states=rec.h)
    if model.form == "richlazy":
        D = fp(_prev(state0.h.to(rec.h.dtype), rec.h))
        return Linearisation("rate_richlazy", n, T, B, model.dt_ms, W, D, c.c_in, leak=c.leak, gap=gap,
                             states=rec.h)
    # murray: r^t = leak r^{t-1} + γ f(u^t), u^t = W r^{t-1} + ...; the derivative is at the *current* u^t
    D = torch.ones_like(rec.h)
    post = c.c_f * fp(rec.h)
    kind = "murray" if gap is None else "murray_gap"
    states = rec.r if gap is None else torch.cat([rec.r, rec.h], dim=-1)
    return Linearisation(kind, n, T, B, model.dt_ms, W, D, post, leak=c.leak, gap=gap, states=states)


class _SpikingConsts(TypedDict):
    leak: Tensor
    rho: Tensor | None
    c_a: Tensor | None
    beta: Tensor | None
    reset: Tensor
    c_in: Tensor
    v_th: Tensor
    gap: Tensor | None
    alpha_syn: Tensor | None


def _spiking_consts(model: SpikingRNN, r_on: bool) -> _SpikingConsts:
    c = model.constants()
    adaptive = bool((model.beta != 0).any())
    alpha_syn = None
    if c.synaptic:
        assert c.alpha_syn is not None  # synaptic: alpha_syn given
        alpha_syn = c.alpha_syn.expand(model.n)
    return {"leak": c.alpha, "rho": c.rho if adaptive else None, "c_a": c.c_a if adaptive else None,
            "beta": c.beta if adaptive else None, "reset": c.v_th * float(r_on), "c_in": c.c_in, "v_th": c.v_th,
            "gap": _gap_laplacian(model.gap), "alpha_syn": alpha_syn}


def _spiking_states(k: _SpikingConsts, v: Tensor, a: Tensor, i: Tensor | None) -> Tensor:
    parts = [v] + ([a] if k["beta"] is not None else [])
    if k["alpha_syn"] is not None:
        assert i is not None  # synaptic: the trajectory has i
        parts.append(i)
    return parts[0] if len(parts) == 1 else torch.cat(parts, dim=-1)


def _linearise_spiking(model: SpikingRNN, x: Tensor, state0: Any, r_on: bool) -> Linearisation:
    if state0 is None:  # resolved once: a relaxed initial state runs the network
        state0 = model.init_state(x.shape[1])
    out = model(x, state=state0, record=True)
    rec = out.record
    T, B = rec.v.shape[:2]
    k = _spiking_consts(model, r_on)
    psi_prev = _prev(torch.zeros_like(rec.psi[0]), rec.psi)  # ψ of the given initial state := 0 (z^0 is given)
    W = model.effective_weights().W_rec
    states = _spiking_states(k, rec.v, rec.a, rec.i_syn)
    leak, reset = k["leak"], k["reset"]
    if model.reset == "zero":  # v^t = α (1 − z^{t-1}) v^{t-1} + …: per-step leak, reset derivative −α v^{t-1}
        z_prev = _prev(state0.z.to(rec.z.dtype), rec.z).detach()
        v_prev = _prev(state0.v.to(rec.v.dtype), rec.v)
        leak = k["leak"] * (1.0 - z_prev)
        reset = k["leak"] * v_prev * float(r_on)
    return Linearisation("spiking", model.n, T, B, model.dt_ms, W, psi_prev, k["c_in"], leak=leak,
                         gap=k["gap"], rho=k["rho"], c_a=k["c_a"], beta=k["beta"], reset=reset, states=states,
                         alpha_syn=k["alpha_syn"])


def _linearise_spiking_rate(model: SpikingRNN, x: Tensor, state0: Any, r_on: bool, width: float
                            ) -> Linearisation:
    """Escape-noise mean-field map of a spiking network (spikes -> expected spikes; no refractoriness)."""
    if model.reset == "zero":
        raise ValueError("jacobian='rate' (escape-noise mean field) is written for the subtractive reset; a model "
                         "with reset='zero' needs jacobian='surrogate'")
    x = model._prep_x(x)
    T, B, _ = x.shape
    if state0 is None:
        state0 = model.init_state(B)
    c = model.constants()
    W = model.effective_weights()
    scaled = model.scaling == "B"
    ci = c.c_in[:, None]
    ff = time_linear(x, ci * W.W_in if scaled else W.W_in)
    W_sc: Any = model.scaled_recurrent(W.W_rec, c.c_in) if scaled else W.W_rec
    W_rec_T = None if isinstance(W_sc, SparseWeights) else W_sc.T
    gap = model.gap
    G = None if gap is None else (ci * gap if scaled else gap)
    v, a, p = state0.v, state0.a, state0.z
    syn = c.synaptic
    i = state0.i_syn if (syn and getattr(state0, "i_syn", None) is not None) else torch.zeros_like(v)
    psis, vs, as_, is_ = [], [], [], []
    for ff_t in ff.unbind(0):
        drive = ff_t + (p @ W_rec_T if W_rec_T is not None else SPARSE.product(W_sc, p))
        if syn:
            assert c.alpha_syn is not None  # synaptic: alpha_syn given
            i = c.alpha_syn * i + drive
            drive = i
            is_.append(i)
        if G is not None:
            drive = drive + v @ G.T - v * G.sum(1)
        v = c.alpha * v + drive - c.v_th * p
        a = c.rho * a + c.c_a * p
        u = (v - (c.v_th + c.beta * a)) / (c.v_th * width)
        p = torch.sigmoid(u)
        psis.append(p * (1 - p) / (c.v_th * width))  # ∂p/∂v
        vs.append(v)
        as_.append(a)
    psi_prev = _prev(torch.zeros_like(psis[0]), torch.stack(psis))
    k = _spiking_consts(model, r_on)
    states = _spiking_states(k, torch.stack(vs), torch.stack(as_), torch.stack(is_) if syn else None)
    return Linearisation("spiking", model.n, T, B, model.dt_ms, W.W_rec, psi_prev, k["c_in"], leak=k["leak"],
                         gap=k["gap"], rho=k["rho"], c_a=k["c_a"], beta=k["beta"], reset=k["reset"], states=states,
                         alpha_syn=k["alpha_syn"])


# ----------------------------------------------------------------------------------------------- QR
class QRGrowth(NamedTuple):
    """Result of :func:`qr_log_growth`."""

    exponents: Tensor      # (B, k) per-step exponents λ_i averaged over the counted steps (differentiable)
    log_r: Tensor          # (n_qr, B, k) log|R_ii| at every re-orthonormalisation (after the transient or not)
    qr_steps: Tensor       # (n_qr,) int64 number of steps done at each re-orthonormalisation (1-based)
    transient_steps: int   # steps excluded (rounded up to a multiple of qr_every)
    Q: Tensor              # (B, n_state, k) final orthonormal frame


@overload
def qr_log_growth(lin: Linearisation, k: int, *, transient_steps: int | None = None, qr_every: int = 1,
                  Q0: Tensor | None = None, seed: int = 0, keep: Literal[False] = False) -> QRGrowth: ...
@overload
def qr_log_growth(lin: Linearisation, k: int, *, transient_steps: int | None = None, qr_every: int = 1,
                  Q0: Tensor | None = None, seed: int = 0, keep: Literal[True]
                  ) -> tuple[QRGrowth, list[tuple[Tensor, Tensor, Tensor]]]: ...
@overload
def qr_log_growth(lin: Linearisation, k: int, *, transient_steps: int | None = None, qr_every: int = 1,
                  Q0: Tensor | None = None, seed: int = 0, keep: bool = False
                  ) -> QRGrowth | tuple[QRGrowth, list[tuple[Tensor, Tensor, Tensor]]]: ...


def qr_log_growth(lin: Linearisation, k: int, *, transient_steps: int | None = None, qr_every: int = 1,
                  Q0: Tensor | None = None, seed: int = 0, keep: bool = False
                  ) -> QRGrowth | tuple[QRGrowth, list[tuple[Tensor, Tensor, Tensor]]]:
    """Lyapunov exponents of a tangent map by QR re-orthonormalisation (§7.1).

    ``Q̃_t = J_t Q_{t-1}``; every ``qr_every`` steps (and after the last) ``Q_t R_t = qr(Q̃_t)``;
    ``λ_i = Σ_{t > T_tr} log|R_t[i,i]| / (T − T_tr)`` per step.

    Args:
        lin: tangent map (:func:`linearise`). k: number of exponents (``1 ≤ k ≤ n_state``).
        transient_steps: steps excluded (default :func:`default_transient`); rounded up to a multiple of
            ``qr_every``. Q0: initial ``(B, n_state, k)`` orthonormal frame (default :func:`random_orthonormal`).
        keep: also return ``[(Q_{t-1}, Q_t, R_t)]`` for every counted step (``qr_every = 1`` only; local flossing).
    """
    T, B, n_s = lin.n_steps, lin.batch, lin.n_state
    if not 1 <= k <= n_s:
        raise ValueError(f"k must be in [1, {n_s}], got {k}")
    m = int(qr_every)
    if m < 1:
        raise ValueError(f"qr_every must be >= 1, got {qr_every}")
    if T < 1:
        raise ValueError("need at least one step")
    tr = default_transient(T) if transient_steps is None else int(transient_steps)
    tr = int(math.ceil(tr / m) * m)
    if not 0 <= tr < T:
        raise ValueError(f"transient_steps must be in [0, T) after rounding to a multiple of qr_every; "
                         f"got {tr} for T = {T}")
    if keep and m != 1:
        raise ValueError("keep=True needs qr_every = 1")
    if Q0 is None:
        Q = random_orthonormal(B, n_s, k, seed=seed, dtype=lin.W.dtype, device=lin.W.device)
    else:
        if Q0.shape != (B, n_s, k):
            raise ValueError(f"Q0 must have shape ({B}, {n_s}, {k}), got {tuple(Q0.shape)}")
        Q = Q0.to(dtype=lin.W.dtype, device=lin.W.device)
    logs, steps, kept = [], [], []
    for t in range(T):
        Q_prev = Q
        Q = lin.apply(t, Q)
        done = t + 1
        if done % m == 0 or done == T:
            Q, R = torch.linalg.qr(Q)
            logs.append(torch.log(torch.diagonal(R, dim1=-2, dim2=-1).abs()))
            steps.append(done)
            if keep and done > tr:
                kept.append((Q_prev, Q, R))
    log_r = torch.stack(logs)
    qr_steps = torch.tensor(steps, dtype=torch.int64)
    counted = qr_steps > tr
    lam = log_r[counted].sum(0) / (T - tr)
    res = QRGrowth(exponents=lam, log_r=log_r, qr_steps=qr_steps, transient_steps=tr, Q=Q)
    return (res, kept) if keep else res


# ----------------------------------------------------------------------------------------------- flossing
class FlossingConfig(NamedTuple):
    """Hyperparameters of one flossing gradient (§7.2; see :mod:`spikelearn.rules.flossing`)."""

    k: int = 1                                   # number of leading exponents pushed to ``target``
    target: float = 0.0                          # λ* (per step)
    mode: str = "autodiff"                       # "autodiff" (Engelken, §7.2) or "local" (§7.3, ours)
    transient_steps: int | None = None           # default: 10 + ⌈T/10⌉
    qr_every: int = 1
    seed: int = 0                                # seed of the initial frame Q0
    jacobian: str = "surrogate"                  # spiking models: "surrogate" or "rate"
    reset_derivative: bool | None = None         # spiking models: keep −v_th δz (default: as the model's BPTT)
    escape_width: float = 0.1                    # spiking models, jacobian="rate": logistic width (units of v_th)


def _check_cfg(cfg: FlossingConfig) -> None:
    if cfg.mode not in ("autodiff", "local"):
        raise ValueError(f"flossing mode must be 'autodiff' or 'local', got {cfg.mode!r}")
    if int(cfg.k) < 1:
        raise ValueError(f"flossing k must be >= 1, got {cfg.k}")


def flossing_loss(model: nn.Module, x: Tensor, state0: Any = None, cfg: FlossingConfig = FlossingConfig()
                  ) -> tuple[Tensor, Tensor]:
    """``L = (1/(B k)) Σ_b Σ_{i≤k} (λ_{b,i} − λ*)²`` and the exponents ``(B, k)``; differentiable (§7.2)."""
    _check_cfg(cfg)
    lin = linearise(model, x, state0, jacobian=cfg.jacobian,  # type: ignore[arg-type]
                    reset_derivative=cfg.reset_derivative, escape_width=cfg.escape_width)
    res = qr_log_growth(lin, int(cfg.k), transient_steps=cfg.transient_steps, qr_every=cfg.qr_every,
                        seed=cfg.seed)
    assert isinstance(res, QRGrowth)
    lam = res.exponents
    return ((lam - cfg.target) ** 2).mean(), lam


def flossing_grads(model: RateRNN | SpikingRNN, x: Tensor, state0: Any = None, cfg: FlossingConfig = FlossingConfig()
                   ) -> tuple[Tensor, dict[str, Tensor], Tensor]:
    """Gradient of :func:`flossing_loss` w.r.t. the dynamics parameters (all but the readout).

    ``cfg.mode = "autodiff"``: reverse mode through trajectory, Jacobian products and QR (Engelken).
    ``cfg.mode = "local"``: :func:`local_flossing_grads`. Returns ``(loss, grads, exponents (B, k))``, detached.
    """
    _check_cfg(cfg)
    if cfg.mode == "local":
        return local_flossing_grads(model, x, state0, cfg)
    names = dynamics_parameters(model)
    params = dict(model.named_parameters())
    with torch.enable_grad():
        loss, lam = flossing_loss(model, x, state0, cfg)
        g = torch.autograd.grad(loss, [params[n] for n in names], allow_unused=True)
    grads = {n: gi for n, gi in zip(names, g) if gi is not None}
    return loss.detach(), grads, lam.detach()


def local_flossing_grads(model: RateRNN | SpikingRNN, x: Tensor, state0: Any = None,
                         cfg: FlossingConfig = FlossingConfig()) -> tuple[Tensor, dict[str, Tensor], Tensor]:
    r"""Local flossing update (§7.3 option 2; this package's design): the gradient of :func:`flossing_loss` with
    the trajectory and the tangent frames held fixed.

    With ``J_t Q_{t-1} = Q_t R_t``, ``d log|R_t[i,i]| = (Q_t^T dJ_t Q_{t-1} R_t^{-1})_{ii}`` exactly (the
    ``Q^T dQ`` part is skew), and ``dJ_t`` enters through ``diag(P_t) dW pre_t(·)``, so::

        ∂L/∂W_rec[j,i] = Σ_{b,t>T_tr,l} (2(λ_{b,l} − λ*)/(B k (T−T_tr))) · u_{t,l,j} · p_{t,l,i},
        u = P_t ⊙ (Q_t)_{:,l} (post),   p = pre_t((Q_{t-1} R_t^{-1})_{:,l}) (pre)

    — a sum of post × pre products modulated by k global scalars (for k = 1 and rate R1: ``ĝ_j γ f'_i q_i/||g||``,
    the formula of §7.3). Only ``W_rec`` is updated. Returns ``(loss, grads, exponents (B, k))``.
    """
    _check_cfg(cfg)
    if int(cfg.qr_every) != 1:
        raise ValueError("the local flossing rule re-orthonormalises every step (qr_every = 1)")
    k = int(cfg.k)
    with torch.no_grad():
        lin = linearise(model, x, state0, jacobian=cfg.jacobian,  # type: ignore[arg-type]
                    reset_derivative=cfg.reset_derivative, escape_width=cfg.escape_width)
        res, kept = qr_log_growth(lin, k, transient_steps=cfg.transient_steps, seed=cfg.seed, keep=True)
        lam = res.exponents  # (B, k)
        B = lam.shape[0]
        n_count = lin.n_steps - res.transient_steps
        w = 2.0 * (lam - cfg.target) / (B * k * n_count)  # (B, k) modulators
        sparse = isinstance(lin.W, SparseWeights)
        dW = lin.W.values.new_zeros(lin.W.nnz) if sparse else torch.zeros_like(lin.W)
        t0 = res.transient_steps
        for j, (Q_prev, Q_new, R) in enumerate(kept):
            t = t0 + j
            U = torch.linalg.solve_triangular(R, Q_prev, upper=True, left=False)  # Q_{t-1} R^{-1}
            pre = lin.pre(t, U)                       # (B, N, k)
            post = lin.recurrent_post(t, Q_new)       # (B, N, k)
            if sparse:  # Σ_{b,l} u_{jl} p_{il} on the edges
                n = pre.shape[1]
                SPARSE.edge_outer_add_(dW, (post * w[:, None, :]).mT.reshape(-1, n), pre.mT.reshape(-1, n), like=lin.W)
            else:
                dW += torch.einsum("bjl,bil->ji", post * w[:, None, :], pre)
        loss = ((lam - cfg.target) ** 2).mean()
    grads = model.param_grads({"W_rec": dW})
    return loss, {n: g for n, g in grads.items() if n not in READOUT_PARAMETERS}, lam
