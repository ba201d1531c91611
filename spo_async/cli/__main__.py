"""``python -m spo_async.cli``: the same as the ``spo-async`` console script."""

import sys

from spo_async.cli import main

if __name__ == "__main__":
    sys.exit(main())
