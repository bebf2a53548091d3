"""Storage adapters. ``SqlStore`` serves SQLite and PostgreSQL through SQLAlchemy."""
