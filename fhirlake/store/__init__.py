"""Persistence: PostgreSQL through SQLAlchemy Core (one dialect, no ORM)."""
