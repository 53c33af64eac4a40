"""What several commands share: the runs folder flag, and quieting the libraries
that print progress bars and warnings over a command's own output."""

from __future__ import annotations

import argparse
import logging
import os
import warnings


def add_runs_dir(parser: argparse.ArgumentParser) -> None:
    """`--runs-dir`, defaulting to ./runs (or $TUNEWIZ_RUNS_DIR), as the wizard uses."""
    from tunewiz.core.paths import default_runs_dir

    parser.add_argument(
        "--runs-dir",
        default=str(default_runs_dir()),
        help="Folder that holds the runs (default: runs, or $TUNEWIZ_RUNS_DIR).",
    )


def quiet_libraries() -> None:
    """Silence transformers' progress bars and library warnings that mean nothing to a user
    chatting or evaluating. Imports transformers: call it where the model loads anyway."""
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    # bitsandbytes warns at import on CPUs without its optional `kernels` package: noise for chat.
    logging.getLogger("bitsandbytes").setLevel(logging.ERROR)
    # Deprecation notices from transformers/peft internals mean nothing to someone chatting.
    warnings.filterwarnings("ignore", category=FutureWarning)
