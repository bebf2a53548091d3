"""Storage adapters: one module per concept (keys, management keys, tenancy, plans, usage,
events, idempotency, vault, instances) over one unit of work (``store/unit.py``), gathered
by ``store/database.py``'s :class:`~keyplane.store.database.Database`; SQLite and PostgreSQL
through SQLAlchemy. ``store/tables.py`` is the one schema definition."""
