"""Trio runtime: clock, mempool, the single-writer producer, follower, startup and shutdown.

May import node.core, node.store, node.chain, node.log and node.config (tests/test_layering.py).
"""
