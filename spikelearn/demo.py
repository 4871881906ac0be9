"""``spikelearn demo``: a few-minute end-to-end run on the C. elegans EM connectome.

Builds the Varshney et al. 2011 chemical connectome (279 neurons; GABAergic neurons inhibitory as a modelling
assumption; other neurons keep each synapse's sign), makes it a LIF/ALIF spiking network whose sensory neurons
receive the cue spikes and whose motor neurons are read out, trains it with BPTT (surrogate gradient) on a
shortened evidence-accumulation task, then prints a results table and writes a learning curve and a spike raster.
"""

from __future__ import annotations

import dataclasses
import pathlib

import numpy as np
import pandas as pd
import torch

from spikelearn.build import build_task, train
from spikelearn.config import (
    CircuitConfig,
    ModelConfig,
    OptimizerConfig,
    RuleConfig,
    RunConfig,
    TaskConfig,
    TrainConfig,
)

__all__ = ["DEMO_CONFIG", "run_demo"]

DEMO_CONFIG = RunConfig(
    circuit=CircuitConfig(kind="connectome", name="celegans_varshney2011",
                          options={"signs": "gaba_inhibitory", "weight_per_synapse": 0.05,
                                   "gap_weight_per_junction": 0.005}),
    model=ModelConfig(type="spiking", options={"n_adaptive": 100, "tau_adapt_ms": 500.0, "v_th": 0.6,
                                                "scaling": "A", "n_ref": 5, "tau_mem_ms": 20.0,
                                                "tau_out_ms": 20.0}),
    task=TaskConfig(name="evidence_accumulation",
                    options={"n_cues": 3, "cue_ms": 50.0, "gap_ms": 25.0, "delay_ms": 100.0, "recall_ms": 50.0}),
    rule=RuleConfig(name="bptt"),
    optimizer=OptimizerConfig(name="adam", lr=1e-2),
    train=TrainConfig(iterations=60, batch_size=32, seed=1, eval_every=10, eval_batch_size=256, quiet=False,
                      out_dir="demo_out"),
)


def run_demo(out_dir: str | pathlib.Path = "demo_out", iterations: int | None = None,
             quiet: bool = False) -> pd.DataFrame:
    """Run the demo; write ``results.csv``, ``learning_curve.png`` and ``spike_raster.png`` into ``out_dir``.

    Returns the results table (one row per quantity).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = pathlib.Path(out_dir)
    cfg = DEMO_CONFIG
    cfg = dataclasses.replace(cfg, train=dataclasses.replace(
        cfg.train, out_dir=str(out), quiet=quiet,
        iterations=cfg.train.iterations if iterations is None else iterations))
    hist, model = train(cfg, overwrite=True)  # the demo's own folder: a re-run replaces it
    task = build_task(cfg)
    task_steps = task.n_steps
    circuit = model.circuit
    evals = hist.dropna(subset=["accuracy"])
    first, last = evals.iloc[0], evals.iloc[-1]

    rows = [("connectome", cfg.circuit.name), ("neurons", circuit.n), ("chemical edges", circuit.n_edges),
            ("inhibitory (GABA) neurons", int((circuit.signs == -1).sum())),
            ("input (sensory) neurons", int(np.asarray(circuit.input_mask).sum())),
            ("readout (motor) neurons", int(np.asarray(circuit.output_mask).sum())),
            ("task", f"{cfg.task.name} ({task_steps} ms, {cfg.task.options['n_cues']} cues)"), ("rule", cfg.rule.name),
            ("iterations", int(last["iteration"])),
            ("accuracy, first evaluation", round(float(first["accuracy"]), 3)),
            ("accuracy, last evaluation", round(float(last["accuracy"]), 3)),
            ("eval loss, first -> last", f"{first['eval_loss']:.3f} -> {last['eval_loss']:.3f}"),
            ("firing rate (Hz), last", round(float(last["firing_rate_hz"]), 2)),
            ("wall time (s)", round(float(last["wall_time_s"]), 1))]
    table = pd.DataFrame(rows, columns=["quantity", "value"])
    table.to_csv(out / "results.csv", index=False)
    print(table.to_string(index=False))

    fig, ax = plt.subplots(1, 2, figsize=(9, 3.2))
    ax[0].plot(hist["iteration"], hist["loss"], lw=0.8, label="training loss")
    ax[0].plot(evals["iteration"], evals["eval_loss"], "o-", ms=3, label="evaluation loss")
    ax[0].set_xlabel("iteration")
    ax[0].set_ylabel("cross-entropy")
    ax[0].legend(frameon=False)
    ax[1].plot(evals["iteration"], evals["accuracy"], "o-", ms=3, color="C2")
    ax[1].axhline(0.5, color="grey", lw=0.5, ls=":")
    ax[1].set_xlabel("iteration")
    ax[1].set_ylabel("evaluation accuracy")
    ax[1].set_ylim(0, 1.02)
    fig.suptitle("C. elegans connectome (Varshney 2011), LIF/ALIF, BPTT, evidence accumulation", fontsize=9)
    fig.tight_layout()
    fig.savefig(out / "learning_curve.png", dpi=120)
    plt.close(fig)

    gen = torch.Generator().manual_seed(123)
    x, y, mask = task.sample(1, gen, dtype=next(model.parameters()).dtype)
    with torch.no_grad():
        rec = model(x, record=True).record
    z = rec.z[:, 0].cpu().numpy()
    order = np.argsort([str(t) for t in circuit.cell_types], kind="stable")
    fig, ax = plt.subplots(2, 1, figsize=(9, 5), sharex=True, gridspec_kw={"height_ratios": [1, 3]})
    ti, ci = np.nonzero(x[:, 0].cpu().numpy())
    ax[0].scatter(ti, ci, s=1, c="k", marker="|")
    ax[0].set_ylabel("input channel")
    t, n = np.nonzero(z[:, order])
    inh = (circuit.signs[order] == -1)[n]
    ax[1].scatter(t[~inh], n[~inh], s=1, c="C0", marker="|", label="excitatory / unknown sign")
    ax[1].scatter(t[inh], n[inh], s=1, c="C3", marker="|", label="GABAergic (inhibitory)")
    ax[1].set_xlabel(f"time (ms, dt = {task.dt_ms} ms)")
    ax[1].set_ylabel("neuron (grouped by class)")
    ax[1].legend(frameon=False, loc="upper right", fontsize=7, markerscale=6)
    fig.tight_layout()
    fig.savefig(out / "spike_raster.png", dpi=120)
    plt.close(fig)
    print(f"\nwrote {out / 'results.csv'}, {out / 'learning_curve.png'}, {out / 'spike_raster.png'}")
    return table
