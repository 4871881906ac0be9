"""Analysis: learning regime (rich/lazy), curvature (Hessian spectra), stability (Lyapunov spectra, gradient
flossing) and spike statistics. Pure functions on models, circuits and the rules' public contract; results come
back as tidy DataFrames or small result objects with ``.to_frame()``; ``*_measurement`` functions build
trainer measurement hooks. Plotting helpers live in the submodules ``plots_regime`` and ``plots_stability``
(imported on demand, so matplotlib stays out of ``import spikelearn.analysis``).
"""

from spikelearn.analysis.flossing import (
                                          FlossingConfig,
                                          floss,
                                          flossing_grads,
                                          flossing_loss,
                                          local_flossing_grads,
                                          task_inputs,
)
from spikelearn.analysis.hessian import (
                                          EigResult,
                                          HessianOperator,
                                          LanczosResult,
                                          SLQResult,
                                          TraceResult,
                                          hessian_density,
                                          hessian_measurement,
                                          hessian_operator,
                                          hessian_spectrum,
                                          hutchinson_trace,
                                          lanczos,
                                          power_iteration,
                                          slq,
                                          top_eigenvalues,
)
from spikelearn.analysis.lyapunov import (
                                          LyapunovResult,
                                          lyapunov_from_jacobians,
                                          lyapunov_measurement,
                                          lyapunov_spectrum,
                                          max_lyapunov,
                                          mean_field_lyapunov,
                                          perturbation_growth_rate,
)
from spikelearn.analysis.regime import (
                                          activity_effective_rank,
                                          cka,
                                          default_rules,
                                          gradient_alignment,
                                          hidden_activity,
                                          kernel_alignment,
                                          model_weight_change,
                                          output_jacobian,
                                          regime_measurement,
                                          regime_summary,
                                          representation_alignment,
                                          representation_kernel,
                                          sign_similarity,
                                          sparse_to_scipy,
                                          tangent_kernel,
                                          tangent_kernel_alignment,
                                          weight_change,
                                          weight_effective_rank,
                                          weight_spectral_radius,
)
from spikelearn.analysis.spikes import (
                                          SpikeStats,
                                          cv_isi,
                                          fano_factor,
                                          firing_rates,
                                          psth,
                                          spike_stats,
                                          spike_stats_measurement,
                                          synchrony,
)

__all__ = [
    # stability
    "LyapunovResult", "lyapunov_spectrum", "max_lyapunov", "lyapunov_from_jacobians", "perturbation_growth_rate",
    "mean_field_lyapunov", "lyapunov_measurement",
    "FlossingConfig", "flossing_loss", "flossing_grads", "local_flossing_grads", "floss", "task_inputs",
    # spikes
    "SpikeStats", "spike_stats", "firing_rates", "cv_isi", "fano_factor", "synchrony", "psth",
    "spike_stats_measurement",
    # curvature
    "HessianOperator", "hessian_operator", "EigResult", "LanczosResult", "TraceResult", "SLQResult", "lanczos",
    "top_eigenvalues", "power_iteration", "hutchinson_trace", "slq", "hessian_spectrum", "hessian_density",
    "hessian_measurement",
    # learning regime
    "kernel_alignment", "representation_kernel", "representation_alignment", "cka", "sign_similarity",
    "hidden_activity", "output_jacobian", "tangent_kernel", "tangent_kernel_alignment", "weight_change",
    "model_weight_change", "weight_effective_rank", "weight_spectral_radius", "activity_effective_rank",
    "gradient_alignment", "default_rules", "regime_summary", "regime_measurement", "sparse_to_scipy",
]
