"""Two clients signing with one key (the CLI while a bot trades the same account): the CLI picks
a free nonce of the window and retries a BAD_NONCE, saying so (issue 13)."""

from __future__ import annotations

import json
import pathlib

import pytest
import trio

from node.cli.main import main
from node.cli.tx import choose_nonce
from node.core.crypto import SigningKey
from node.core.txs import Withdraw, sign_tx
from tests.e2e.chain import CHAIN_ID, USD, call, make_chain, running_node


def test_a_free_nonce_from_the_upper_half_of_the_window() -> None:
    info = {"next_nonce": "10", "window": "64", "used": ["42", "43"]}
    assert choose_nonce(info, set()) == 44
    assert choose_nonce(info, {44, 45}) == 46
    full = {"next_nonce": "0", "window": "4", "used": ["2", "3"]}
    assert choose_nonce(full, set()) == 0  # the upper half is used: the lower half then


async def test_the_cli_retries_a_nonce_another_signer_took(
    tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    home = tmp_path / "home"
    make_chain(home, 1)
    key = SigningKey.from_label("devnet/trader/12")
    # Blocks every 1.5 s: the bot's tx is still pending when the CLI submits its own.
    async with running_node(home, block_interval_ms=1_500) as (url, _):
        info = await call(url, "perp_getNonce", address=key.public_key.hex())
        assert (info["next_nonce"], info["window"], info["used"]) == ("0", "64", [])
        # The bot takes the nonce the CLI will choose first (next + window / 2).
        bot = sign_tx(Withdraw(nonce=32, amount_quote=USD), key, CHAIN_ID)
        await call(url, "tx_submit", tx=bot.raw.hex())

        def cli() -> tuple[int, str, str]:
            code = main(
                ["tx", "withdraw", "--key", "devnet/trader/12", "--amount", "2000000"]
                + ["--rpc", url]
            )
            out, err = capsys.readouterr()
            return code, out, err

        code, out, err = await trio.to_thread.run_sync(cli)
        assert code == 0, (out, err)
        assert json.loads(out)["status"] == "committed"
        assert "nonce 32 was taken by another signer of devnet/trader/12; retrying" in err
        info = await call(url, "perp_getNonce", address=key.public_key.hex())
        assert info["used"] == ["32", "33"]  # both withdrawals went through
