"""ABCI Query: the state with its proof, and the perp_* reads of our JSON-RPC. Imports
node.store, node.rpc.errors and the generated protobuf modules.

    path "/perp/state"  data = a state key (node.core.keys); height 0 = the latest committed;
                        value = its bytes (empty when absent); with prove, one ProofOp of type
                        "perp:smt" whose data verifies with node.core.merkle.verify_proof
                        against the root of that height (the app_hash CometBFT recorded).
    path "/perp/rpc"    data = {"method": "perp_...", "params": {...}} as JSON: the public
                        JSON-RPC method's result as JSON in value; an error has code =
                        its JSON-RPC error code (positive) and the message in log.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from node.abci.proto.tendermint.abci import types_pb2 as pb
from node.abci.proto.tendermint.crypto import proof_pb2
from node.rpc.errors import RpcError
from node.store import HeightUnavailable

if TYPE_CHECKING:
    from node.abci.application import PerpApplication

PROOF_TYPE = "perp:smt"
CODE_BAD_QUERY = 1
CODE_UNAVAILABLE = 2


async def answer_query(app: PerpApplication, req: Any) -> Any:
    if req.path == "/perp/state":
        return state_query(app, req)
    if req.path == "/perp/rpc":
        return await rpc_query(app, req)
    return pb.ResponseQuery(code=CODE_BAD_QUERY, log=f"unknown path {req.path!r}")


def state_query(app: PerpApplication, req: Any) -> Any:
    store = app.store
    key = bytes(req.data)
    height = int(req.height) or store.height
    if height < 0:
        return pb.ResponseQuery(code=CODE_BAD_QUERY, log=f"height {height} < 0")
    if not 1 <= len(key) <= 256:
        return pb.ResponseQuery(code=CODE_BAD_QUERY, log="data must be a 1..256-byte state key")
    try:
        value = store.get(key, height)
        proof = store.prove(key, height) if req.prove else None
    except HeightUnavailable as error:
        return pb.ResponseQuery(code=CODE_UNAVAILABLE, log=str(error), height=height)
    response = pb.ResponseQuery(code=0, key=key, value=value or b"", height=height)
    if proof is not None:
        response.proof_ops.ops.append(proof_pb2.ProofOp(type=PROOF_TYPE, key=key, data=proof))
    if value is None:
        response.log = "absent"
    return response


async def rpc_query(app: PerpApplication, req: Any) -> Any:
    if app.rpc_call is None:
        return pb.ResponseQuery(code=CODE_BAD_QUERY, log="no JSON-RPC methods on this node")
    try:
        call = json.loads(bytes(req.data))
        method = call["method"]
        params = call.get("params") or {}
        if type(method) is not str or not method.startswith("perp_") or type(params) is not dict:
            raise ValueError("method must be a perp_* name and params an object")
    except (ValueError, KeyError, TypeError) as error:
        return pb.ResponseQuery(code=CODE_BAD_QUERY, log=f"bad /perp/rpc query: {error}")
    try:
        result = await app.rpc_call(method, params)
    except RpcError as error:
        return pb.ResponseQuery(code=abs(error.code), log=error.message, height=app.store.height)
    return pb.ResponseQuery(code=0, value=json.dumps(result).encode(), height=app.store.height)
