"""What the SQL stores share: one query translator, one etag write ladder, one cleanup loop.

A dialect (`<store>/dialect.py`) supplies only what differs: how a parameter is written, how the
JSON type and value at a path are read, and the store's statements.
"""
