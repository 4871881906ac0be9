"""The dependencies spikelearn imports lazily — inside the function that needs them — listed in one place.

Everything else is imported at the top of its module (a test reads the package's import graph and refuses any other
function-level import). A module is here when it is an optional extra, or heavy to import and needed by one feature
only, so that ``import spikelearn`` stays fast and works without the extras:

=================  ==========================================================  ===================================
module             used by                                                     install
=================  ==========================================================  ===================================
``brian2``         :mod:`spikelearn.validate` (cross-simulator checks)          a dependency (``pip install brian2``)
``nir``            NIR export/import (:mod:`spikelearn.validate.nir`)           ``pip install "spikelearn[nir]"``
``nirtorch``       NIR import into snnTorch                                    ``pip install "spikelearn[nir]"``
``snntorch``       snnTorch surrogates and NIR round trips                     a dependency
``dask``           sweep executor ``dask``                                     ``pip install "spikelearn[dask]"``
``distributed``    sweep executor ``dask``                                     ``pip install "spikelearn[dask]"``
``dask_jobqueue``  sweep executor ``slurm``                                    ``pip install dask-jobqueue``
``matplotlib``     plots (:mod:`spikelearn.analysis`, demo, sweep reports)      a dependency
``sklearn``        the 8×8 digits of :class:`spikelearn.tasks.SequentialDigits`  a dependency
``mnist1d``        the mnist1d data set of :mod:`spikelearn.lateral` (generated   ``pip install "spikelearn[lateral]"``
                   locally, no download)
``fcntl``          file locks of the sweep store (POSIX only)                   standard library
=================  ==========================================================  ===================================

:func:`require` imports one of them with an error that names the feature and the install command.
"""

from __future__ import annotations

import importlib
from types import ModuleType

__all__ = ["OPTIONAL_MODULES", "require"]

#: top-level module name -> how to get it
OPTIONAL_MODULES: dict[str, str] = {
    "brian2": "pip install brian2",
    "nir": 'pip install "spikelearn[nir]"',
    "nirtorch": 'pip install "spikelearn[nir]"',
    "snntorch": "pip install snntorch",
    "dask": 'pip install "spikelearn[dask]"',
    "distributed": 'pip install "spikelearn[dask]"',
    "dask_jobqueue": "pip install dask-jobqueue",
    "matplotlib": "pip install matplotlib",
    "sklearn": "pip install scikit-learn",
    "mnist1d": 'pip install "spikelearn[lateral]"',
    "fcntl": "a POSIX system (the standard library's fcntl)",
}


def require(module: str, feature: str) -> ModuleType:
    """Import ``module`` (one of :data:`OPTIONAL_MODULES`, or a submodule of one) for ``feature``; a missing module is
    an ``ImportError`` naming the feature and how to install it."""
    top = module.split(".")[0]
    if top not in OPTIONAL_MODULES:
        raise ValueError(f"{module!r} is not an optional dependency of spikelearn (see spikelearn.optional)")
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise ImportError(f"{feature} needs {top!r}: {OPTIONAL_MODULES[top]} ({e})") from e
