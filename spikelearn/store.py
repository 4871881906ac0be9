"""The sweep run store (public home of :class:`~spikelearn.sweep.store.RunStore`).

``RunStore(DIR)`` opens the embedded SQLite database of a sweep folder; ``runs()``, ``metrics()`` and ``tidy()``
return pandas DataFrames. See :mod:`spikelearn.sweep.store` for the schema.
"""

from spikelearn.sweep.store import STATUSES, STORE_FILE, RunStore

__all__ = ["RunStore", "STATUSES", "STORE_FILE"]
