"""JSON-RPC 2.0 over HTTP and WebSocket (hypercorn on trio): public, admin and metrics listeners.

May import node.core, node.store, node.chain, node.rpc, node.log and node.config.
"""
