"""The result store now lives in :mod:`byzsim.runs.store`; this module keeps old imports working."""

from .runs.store import *  # noqa: F401,F403
from .runs.store import __all__  # noqa: F401
