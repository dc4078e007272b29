"""`python -m compress` is the same as the `compress` command."""

import sys

from .cli import main

sys.exit(main())
