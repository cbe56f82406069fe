"""`python -m locedit` runs the CLI."""

import sys

from locedit.cli import main

sys.exit(main())
