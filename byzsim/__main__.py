"""``python -m byzsim`` = the ``byzsim`` command (see :mod:`byzsim.cli`)."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
