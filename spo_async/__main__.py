"""``python -m spo_async``: the ``spo-async`` command line (needs ``spo-async[cli]``)."""

import sys

from spo_async.cli import main

if __name__ == "__main__":
    sys.exit(main())
