"""The hostile-input catalogue: shapes of input that once froze or broke the server.

Each module holds one family of shapes (decimal amounts, regular expressions, request headers)
and the tests that send them through every surface that accepts them. A new surface that takes
one of these inputs gets its row in the matching module, so it gets the same treatment.
"""
