"""`python -m latentdiff` is the `latentdiff` command."""

import sys

from latentdiff.cli import main

sys.exit(main())
