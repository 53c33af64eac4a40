"""Shipped data: GPU and model catalogs, training presets, the bundled sample dataset.

A package only so that installers ship these files beside `core`.
"""
