"""`python -m tfcv.serving`: the same server as `tfcv serve`."""

import sys

from tfcv.serving.server import main

if __name__ == "__main__":
    sys.exit(main())
