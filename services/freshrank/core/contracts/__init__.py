"""Contracts between the parts of Freshrank, each defined once, at the bottom of the layers.

One module per contract (routes, metric names, quality metrics ...); import from the module,
e.g. ``from freshrank.core.contracts.routes import RANK``. This file stays empty of names so
that contracts added side by side never touch it.
"""
