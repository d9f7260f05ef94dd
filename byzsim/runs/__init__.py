"""Running experiments: specs -> run entries -> execution -> result store -> tables -> plots.

* :mod:`.spec`: command-line overrides, grids, figure specs and config files become
  :class:`RunEntry` lists (validated configs with their store keys);
* :mod:`.execute`: runs the entries not stored yet (serial, joblib/loky, Dask) and
  stores each as it finishes (resume, failures, interruption);
* :mod:`.store`: the on-disk result store, keyed by the resolved config;
* :mod:`.plots`: metrics tables -> matplotlib figures.
"""
