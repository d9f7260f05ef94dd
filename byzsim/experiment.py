"""Figure specs now live in :mod:`byzsim.runs`; this module keeps old imports and
``python -m byzsim.experiment SPEC`` working."""

import sys

from .runs.spec import *  # noqa: F401,F403
from .runs.spec import __all__, main  # noqa: F401

if __name__ == "__main__":
    sys.exit(main())
