"""Alembic schema migrations of the library database (not embedding-model migrations)."""
