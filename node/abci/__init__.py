"""perpchain as an ABCI 2.0 application under CometBFT v0.38 (docs/ABCI.md): codec (framing),
server (connections on trio), application (the mapping onto node.core and node.store),
query, events, comet (tx_submit forwarding), node (wiring). Needs the `abci` extra."""
