"""The hostile-input catalogue: shapes of input that once froze or broke the server.

One test module per family of shapes: ``test_decimals.py`` (its shapes in ``decimals.py``),
``test_regexes.py`` and ``test_headers.py``, each sending its shapes through every surface that
accepts them. A new surface that takes one of these inputs gets its row in the matching module,
so it gets the same treatment. ``responsive.py`` times ``/healthz`` while an attack is in
flight; ``conftest.py`` gives each module one real server for that.
"""
