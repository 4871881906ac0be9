"""SpikingRNN.forward through the neuron layer's step (issue 18 item 5, "one neuron step") against the old forward.

The old forward (before the model delegated its constants and per-step drive to :mod:`spikelearn.neurons.lif`) is
kept below verbatim as :func:`_old_forward` / :func:`_old_constants`. Both are timed in the same process on the same
model and input, interleaved (old, new, old, new, ...), and the median of ``--repeats`` calls of each is reported.
Before timing, the script checks that both give bit-identical outputs, final states and records.

Set-up: ``SpikingRNN(dale(N, 0.8, p=0.1, seed=0), n_in=20, n_out=2)``, float32, CPU, B = 32, T = 500, Poisson
input; cases ``lif`` (the defaults: LIF, n_ref = 5) and ``alif_cuba`` (half the neurons adaptive, τ_s = 5 ms),
each under ``torch.no_grad()`` with ``record=False`` and ``record=True``.

Usage: ``python benchmarks/forward_neuron_step.py [--N 1024] [--B 32] [--T 500] [--repeats 7] [--threads 0]``.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import numpy as np
import torch
from torch import Tensor

from spikelearn.circuit import dale
from spikelearn.models import ModelOutput, SpikingRecord, SpikingRNN, SpikingState, _check_i_ext, time_linear
from spikelearn.neurons.lif import ALIFConstants, ALIFState, alif_update, synaptic_decay


# ------------------------------------------------------------------------------ the old implementation (reference)
def _old_constants(self: SpikingRNN) -> ALIFConstants:
    alpha = torch.exp(-self.dt_ms / self.tau_mem_ms)
    rho = torch.exp(-self.dt_ms / self.tau_adapt_ms)
    if self.scaling == "A":
        c_in, c_a = torch.ones_like(alpha), torch.ones_like(rho)
    else:
        c_in, c_a = 1 - alpha, 1 - rho
    n_block = self.n_ref if self.refractory == "lsnn" else torch.clamp(self.n_ref - 1, min=0)
    return ALIFConstants(alpha=alpha, rho=rho, c_in=c_in, c_a=c_a, v_th=self.v_th, beta=self.beta,
                         n_block=n_block, detach_reset=self.detach_reset,
                         adaptive=bool((self.beta != 0).any()), refractory=bool((n_block > 0).any()),
                         alpha_syn=synaptic_decay(self.dt_ms, self.tau_syn_ms), synaptic=self.synaptic,
                         reset_zero=self.reset == "zero")


def _old_forward(self: SpikingRNN, x: Tensor, state: SpikingState | None = None, record: bool = False,
                 i_ext: Tensor | None = None) -> ModelOutput:
    x = self._prep_x(x)
    T, B, _ = x.shape
    ext = _check_i_ext(i_ext, T, B, self)
    if state is None:
        state = self.init_state(B)
    W = self.effective_weights()
    c = _old_constants(self)
    scaled = self.scaling == "B"
    W_in = c.c_in[:, None] * W.W_in if scaled else W.W_in
    W_recT = (c.c_in[:, None] * W.W_rec if scaled else W.W_rec).T
    ff = time_linear(x, W_in)  # (T, B, N): all input currents in one batched GEMM
    gap = self.gap
    if gap is not None:
        G = c.c_in[:, None] * gap if scaled else gap
        GT, gsum = G.T, G.sum(1)
    kappa = self.kappa
    omk = self.c_kappa
    norm = self.readout_norm
    surr = self.surrogate
    syn = c.synaptic
    i_syn = state.i_syn if state.i_syn is not None else torch.zeros_like(state.v)
    if syn:
        a_syn = c.alpha_syn
    s = ALIFState(state.v, state.a, state.z, state.ref)
    zf = state.z_filt
    keep_zf = record or self.readout == "filtered_spikes"
    keep_z = record or self.readout == "filtered_current"
    zs: list[Tensor] = []
    zfs: list[Tensor] = []
    vs: list[Tensor] = []
    as_: list[Tensor] = []
    thrs: list[Tensor] = []
    psis: list[Tensor] = []
    refs: list[Tensor] = []
    isyns: list[Tensor] = []
    for t, ff_t in enumerate(ff.unbind(0)):
        drive = torch.addmm(ff_t, s.z, W_recT)  # c_in (W_in x^t + W_rec z^{t-1})
        if syn:
            i_syn = drive = torch.addcmul(drive, a_syn, i_syn)  # i^t = α_s i^{t-1} + c_in (…)
            if record:
                isyns.append(i_syn)
        if gap is not None:
            drive = drive + (s.v @ GT - s.v * gsum)
        if ext is not None:
            drive = drive + ext[t]
        s, aux = alif_update(c, s, drive, surr, need_aux=record)
        zf = torch.lerp(s.z, zf, kappa) if norm else torch.add(s.z, zf, alpha=kappa)  # κ z̄ + c_κ z, one node
        if keep_zf:
            zfs.append(zf)
        if keep_z:
            zs.append(s.z)
        if record:
            assert aux is not None
            vs.append(s.v)
            as_.append(s.a)
            thrs.append(aux.thr)
            psis.append(aux.psi)
            refs.append(aux.refractory)
    W_out = W.W_out
    if self.readout == "filtered_spikes":
        Zf = torch.stack(zfs)
        cur = time_linear(Zf, W_out)
        y_filt = cur[-1] if T else state.y_filt
    else:
        cur_all = time_linear(torch.stack(zs), W_out)
        yf = state.y_filt
        ys = []
        for c_t in cur_all.unbind(0):
            yf = torch.add(yf * kappa, c_t, alpha=omk)
            ys.append(yf)
        cur = torch.stack(ys)
        y_filt = yf
    y = cur + W.b_out if W.b_out is not None else cur
    final = SpikingState(v=s.v, a=s.a, z=s.z, ref=s.ref, z_filt=zf, y_filt=y_filt, i_syn=i_syn)
    rec = None
    if record:
        rec = SpikingRecord(x=x, z=torch.stack(zs), v=torch.stack(vs), a=torch.stack(as_),
                            thr=torch.stack(thrs), psi=torch.stack(psis), z_filt=torch.stack(zfs),
                            ref=torch.stack(refs),
                            i_syn=torch.stack(isyns) if syn else x.new_zeros(()).expand(T, B, self.n))
    return ModelOutput(y=y, state=final, record=rec)


# ------------------------------------------------------------------------------ measurement
CASES = {"lif": {}, "alif_cuba": {"tau_syn_ms": 5.0}}


def _build(case: str, n: int, n_in: int) -> SpikingRNN:
    kw = dict(CASES[case])
    if case == "alif_cuba":
        kw["n_adaptive"] = n // 2
    m = SpikingRNN(dale(n, 0.8, p=0.1, seed=0), n_in, 2, **kw)
    with torch.no_grad():
        m.theta_in.mul_(3.0)
    return m


def _same(a: ModelOutput, b: ModelOutput) -> bool:
    def eq(u, v):
        if u is None or v is None:
            return u is v
        return all(eq(p, q) for p, q in zip(u, v)) if isinstance(u, tuple) else torch.equal(u, v)

    return eq(a.y, b.y) and eq(a.state, b.state) and eq(a.record, b.record)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--N", type=int, default=1024)
    ap.add_argument("--B", type=int, default=32)
    ap.add_argument("--T", type=int, default=500)
    ap.add_argument("--n-in", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--cases", nargs="+", default=list(CASES))
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"# {platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads, torch "
          f"{torch.__version__}, N={args.N} B={args.B} T={args.T} n_in={args.n_in}, float32 CPU, no_grad, "
          f"median of {args.repeats} interleaved repeats")
    torch.manual_seed(0)  # the input/readout weight draws
    np.random.seed(0)
    g = torch.Generator().manual_seed(0)
    x = (torch.rand(args.T, args.B, args.n_in, generator=g) < 0.2).float()
    rows = []
    for case in args.cases:
        m = _build(case, args.N, args.n_in)
        for record in (False, True):
            impls = {"old": lambda m=m, record=record: _old_forward(m, x, record=record),
                     "new": lambda m=m, record=record: m(x, record=record)}
            with torch.no_grad():
                o_old, o_new = impls["old"](), impls["new"]()  # also the warm-up
                assert _same(o_old, o_new), f"{case} record={record}: the new forward differs from the old"
                rate = float(o_new.record.z.mean()) if record else float("nan")
                wall: dict[str, list[float]] = {"old": [], "new": []}
                cpu: dict[str, list[float]] = {"old": [], "new": []}
                for r in range(args.repeats):
                    for name in (("old", "new") if r % 2 == 0 else ("new", "old")):
                        c0, t0 = time.process_time(), time.perf_counter()
                        impls[name]()
                        wall[name].append(time.perf_counter() - t0)
                        cpu[name].append(time.process_time() - c0)
            med = {k: (statistics.median(wall[k]), statistics.median(cpu[k]), min(wall[k])) for k in wall}
            rows.append((case, record, med["old"], med["new"], rate))
    print("median wall-clock and process-CPU seconds per forward (min wall in brackets); outputs checked identical")
    print(f"{'case':10s} {'record':>6s} {'old_wall':>8s} {'new_wall':>8s} {'new/old':>7s}   {'old_cpu':>8s} "
          f"{'new_cpu':>8s} {'new/old':>7s}   {'[old_min':>8s} {'new_min]':>8s}")
    for case, record, (wo, co, lo), (wn, cn, ln), rate in rows:
        extra = f"  spike prob/step {rate:.4f}" if record else ""
        print(f"{case:10s} {record!s:>6s} {wo:8.4f} {wn:8.4f} {wn / wo:7.3f}   {co:8.4f} {cn:8.4f} {cn / co:7.3f}   "
              f"[{lo:7.4f} {ln:8.4f}]{extra}")


if __name__ == "__main__":
    main()
