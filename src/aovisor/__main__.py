"""``python -m aovisor``: the same command line as the ``aovisor`` script."""

import sys

from aovisor.cli.main import main

if __name__ == "__main__":
    sys.exit(main())
