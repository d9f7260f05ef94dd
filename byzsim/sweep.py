"""Sweeps now live in :mod:`byzsim.runs`; this module keeps old imports working."""

from .runs.execute import *  # noqa: F401,F403
from .runs.execute import __all__  # noqa: F401
