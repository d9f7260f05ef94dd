"""Running experiments: specs -> run entries -> execution -> result store -> tables -> plots.

* :mod:`.spec`: command-line overrides, config files with grids and figure specs become
  :class:`RunEntry` lists (validated configs with their store keys);
* :mod:`.execute`: runs the entries not stored yet (serial, joblib/loky, Dask) and
  stores each as it finishes (resume, failures, interruption);
* :mod:`.store`: the on-disk result store, keyed by the resolved config;
* :mod:`.tables`: stored runs -> long-format CSV rows, labels;
* :mod:`.plots`: tables -> matplotlib figures;
* :mod:`.progress`: the progress line.

The modules import each other in that order only (store <- tables <- spec <- execute;
progress and plots stand alone): there is no import cycle.  The function that runs
entries is :func:`byzsim.runs.execute.execute` (``byzsim.runs.execute`` is the module).
"""

from .execute import (
    RunOutcome, SweepError, SweepInterrupted, SweepReport, WorkerDied, report_failures, run_matrix, run_spec,
)
from .plots import plot_heatmap, plot_panels, plot_spec, save_figure
from .progress import Progress
from .spec import (
    Override, OverrideError, RunEntry, RunSpec, Spec, default_sweep_name, entries_from_dicts, expand_grid,
    MatrixSpec, load_entries, load_matrix, load_spec, parse_matrix, parse_overrides, parse_spec, spec_entries,
)
from .store import Store, StoredRun, StoreError, StoreFormatError, config_key
from .tables import CSV_COLUMNS, MATRIX_COLUMNS, derive_labels, matrix_rows, read_csv, rows_from_store, write_csv

__all__ = [
    # spec
    "Override", "OverrideError", "RunEntry", "RunSpec", "Spec", "MatrixSpec", "default_sweep_name",
    "entries_from_dicts", "expand_grid", "load_entries", "load_spec", "load_matrix", "parse_overrides",
    "parse_spec", "parse_matrix", "spec_entries",
    # execute
    "RunOutcome", "SweepError", "SweepInterrupted", "SweepReport", "WorkerDied", "report_failures",
    "run_spec", "run_matrix",
    # store, tables, plots, progress
    "Store", "StoredRun", "StoreError", "StoreFormatError", "config_key",
    "CSV_COLUMNS", "MATRIX_COLUMNS", "derive_labels", "matrix_rows", "read_csv", "rows_from_store", "write_csv",
    "plot_heatmap", "plot_panels", "plot_spec", "save_figure", "Progress",
]
