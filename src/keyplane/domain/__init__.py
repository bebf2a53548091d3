"""Pure domain logic: key format, hashing, scopes, key state and verify decisions.

Nothing in this package may import web, storage or driver modules; a test enforces it.
"""
