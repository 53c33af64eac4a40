import sys

from tunewiz.cli import main

sys.exit(main())
