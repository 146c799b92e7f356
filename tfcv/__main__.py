"""`python -m tfcv`: the `tfcv` command."""

import sys

from tfcv.cli import main

if __name__ == "__main__":
    sys.exit(main())
