"""OPS: operator workflows on the store and chain (snapshot export/import).

May import node.core, node.store, node.chain, node.log and node.config; never rpc, cli or app.
"""
