"""`python -m cartridge ...`: the same command line as the `cartridge` script."""
import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
