"""Issue 20 end to end: the withdrawal "signed" for the identity key (`01 00..00`, signature
`01 00..00 | 00..00`, which `cryptography` accepted for any message) is refused by a real
node over JSON-RPC with BAD_KEY (admission: node/chain/admission.py check_tx -> validate_tx),
nothing is credited to or debited from that key, and the node keeps producing."""

from __future__ import annotations

import pathlib

import pytest

from node.app import init_home
from node.client import RpcCallError
from node.core import codec
from node.core.errors import Reject
from node.core.txs import TxKind, Withdraw, _Envelope
from tests.e2e.chain import call, genesis_doc, running_node, wait_for

IDENTITY_KEY = bytes([1]) + bytes(31)
FORGED_SIGNATURE = bytes([1]) + bytes(63)


def _forged_withdrawal(nonce: int) -> bytes:
    body = codec.encode(Withdraw(nonce=nonce, amount_quote=1_000_000 * 10**6))
    return codec.encode(
        _Envelope(kind=TxKind.WITHDRAW, body=body, signer=IDENTITY_KEY, signature=FORGED_SIGNATURE)
    )


async def test_a_node_refuses_the_forged_withdrawal(tmp_path: pathlib.Path) -> None:
    home = tmp_path / "node"
    init_home(home, genesis_doc())
    async with running_node(home) as (url, _):
        start = await wait_for(url, lambda s: int(s["height"]) >= 1)
        for nonce in range(3):
            with pytest.raises(RpcCallError) as refused:
                await call(url, "tx_submit", tx=_forged_withdrawal(nonce).hex())
            assert refused.value.code == 1000 + Reject.BAD_KEY, refused.value
        account = None
        try:
            account = await call(url, "perp_getAccount", address=IDENTITY_KEY.hex())
        except RpcCallError:
            pass
        assert not account, account
        await wait_for(url, lambda s: int(s["height"]) > int(start["height"]) + 1)
