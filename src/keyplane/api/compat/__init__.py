"""Drop-in compatibility surfaces: other vendors' key-provisioning APIs over Keyplane's data.

Each surface is a router with its own error format (see :mod:`.errors`) and a pure mapping
module that translates between the vendor's fields and Keyplane's (see docs/compatibility.md).
"""
