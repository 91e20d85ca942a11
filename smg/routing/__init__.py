"""Routing: load-balancing policies and the data structures they keep (radix trees for
cache_aware). Policies are sans-I/O: they see worker records and request info, never sockets.
"""
