"""The tunewiz wizard: a Textual app over `core/` (imports nothing heavy at the top)."""
