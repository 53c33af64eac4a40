"""tunewiz core: the headless library behind the wizard and the CLI.

Importing this package must stay cheap: no torch, transformers, peft,
datasets or textual at import time (tests/test_imports.py checks it).
"""

__version__ = "0.1.0"
