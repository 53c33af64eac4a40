"""`python -m tunewiz`: the same as the `tunewiz` command."""

import sys

from tunewiz.cli import main

sys.exit(main())
