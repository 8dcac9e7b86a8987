"""Generated protobuf modules (scripts/gen_abci_proto)."""
