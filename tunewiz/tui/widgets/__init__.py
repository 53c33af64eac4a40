"""Widgets of the wizard (and of the live and chat screens)."""
