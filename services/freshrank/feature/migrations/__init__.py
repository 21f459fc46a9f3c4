"""Alembic migrations of the feature store (run through ``freshrank.feature.migrate``)."""
