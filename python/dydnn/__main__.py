"""``python -m dydnn``: the ``dydnn`` command (see :mod:`dydnn.cli`)."""
import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
