"""Old import path of figure specs, now in :mod:`byzsim.runs`.

``python -m byzsim.experiment SPEC [key=value ...] [options]`` is
``byzsim experiment SPEC [key=value ...] [options]`` (see :mod:`byzsim.cli`).
"""

import sys

from .runs.execute import report_failures, run_spec  # noqa: F401
from .runs.spec import SPEC_KEYS, RunSpec, Spec, load_spec, parse_spec, spec_entries  # noqa: F401
from .runs.tables import (  # noqa: F401
    CSV_COLUMNS, csv_text, derive_labels, flatten_config, read_csv, rows_from_store, run_rows, write_csv,
)

__all__ = [
    "CSV_COLUMNS", "SPEC_KEYS", "RunSpec", "Spec", "parse_spec", "load_spec", "spec_entries",
    "flatten_config", "derive_labels", "run_rows", "rows_from_store", "csv_text", "write_csv",
    "read_csv", "run_spec", "report_failures", "main",
]


def main(argv=None) -> int:
    """``byzsim experiment ARGV``."""
    from .cli import main as cli_main

    return cli_main(["experiment", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
