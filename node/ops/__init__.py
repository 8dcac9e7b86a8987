"""OPS: operator workflows over the store and the state machine (snapshots, verify, rollback,
compensation report).

May import node.core, node.store, node.chain, node.log and node.config; never rpc, cli or app.
"""
