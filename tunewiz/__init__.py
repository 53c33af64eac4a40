"""tunewiz: a terminal wizard for fine-tuning large language models.

The one name this project installs. Inside it, the design's layers:
`tunewiz.core` (the library: no Textual, heavy imports only where used),
`tunewiz.cli` (the `tunewiz` command), `tunewiz.tui` (the Textual wizard) and
`tunewiz.profiles` (GPU and model catalogs, presets, the sample dataset).
"""

__version__ = "0.1.0"
