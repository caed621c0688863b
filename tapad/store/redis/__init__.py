"""The Redis stores: one Redis (``node``) and a Redis Cluster (``cluster``).

``protocol`` speaks RESP on the hot path, ``link`` keeps a connection to one node and
turns its failures into the store's errors, ``keys`` is the key schema and the commands
a batch becomes. Both stores share the last three; nothing here is imported by SQLite.
"""
