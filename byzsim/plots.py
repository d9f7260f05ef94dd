"""Plots now live in :mod:`byzsim.runs.plots`; this module keeps old imports working."""

from .runs.plots import *  # noqa: F401,F403
from .runs.plots import __all__  # noqa: F401
