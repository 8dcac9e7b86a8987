"""OPERATIONS: operator workflows over the store and the state machine (verify, rollback,
compensation report, snapshots). May import node.{core,store,chain,ops,log,config}."""
