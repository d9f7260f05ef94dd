"""Old import path of overrides, run entries and execution, now in :mod:`byzsim.runs`."""

from .runs.execute import (  # noqa: F401
    RunOutcome, SweepError, SweepInterrupted, SweepReport, WorkerDied, execute,
)
from .runs.progress import Progress  # noqa: F401
from .runs.spec import (  # noqa: F401
    Override, OverrideError, RunEntry, check_component_params, component_parameters, default_sweep_name,
    entries_from_dicts, expand_grid, is_figure_spec, load_entries, parse_override, parse_overrides,
    parse_value, set_path,
)

__all__ = [
    "Override", "OverrideError", "SweepError", "SweepInterrupted", "WorkerDied",
    "RunEntry", "RunOutcome", "SweepReport", "Progress",
    "parse_value", "parse_override", "parse_overrides", "expand_grid", "set_path",
    "component_parameters", "check_component_params", "entries_from_dicts",
    "load_entries", "is_figure_spec", "execute", "default_sweep_name",
]
