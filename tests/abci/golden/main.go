// Regenerate tests/abci/golden/vectors.json: cd tests/abci/golden && go run . > vectors.json
// (needs Go and the module proxy; CI only reads the committed JSON).
// Golden ABCI frames from CometBFT v0.38's own Go types and framing (abci/types.WriteMessage).
package main

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"os"
	"time"

	"github.com/cometbft/cometbft/abci/types"
	cmtcrypto "github.com/cometbft/cometbft/proto/tendermint/crypto"
)

func main() {
	out := map[string]string{}
	add := func(name string, req *types.Request) {
		var buf bytes.Buffer
		if err := types.WriteMessage(req, &buf); err != nil {
			panic(err)
		}
		out[name] = hex.EncodeToString(buf.Bytes())
	}
	addResp := func(name string, res *types.Response) {
		var buf bytes.Buffer
		if err := types.WriteMessage(res, &buf); err != nil {
			panic(err)
		}
		out[name] = hex.EncodeToString(buf.Bytes())
	}
	t := time.Unix(1767225661, 5000000).UTC()
	add("request_flush", types.ToRequestFlush())
	add("request_info", types.ToRequestInfo(&types.RequestInfo{Version: "0.38.26", BlockVersion: 11, P2PVersion: 8, AbciVersion: "2.0.0"}))
	add("request_init_chain", types.ToRequestInitChain(&types.RequestInitChain{Time: t, ChainId: "perpchain-devnet-1", InitialHeight: 1,
		Validators: []types.ValidatorUpdate{{PubKey: cmtcrypto.PublicKey{Sum: &cmtcrypto.PublicKey_Ed25519{Ed25519: bytes.Repeat([]byte{7}, 32)}}, Power: 10}}}))
	add("request_check_tx_recheck", types.ToRequestCheckTx(&types.RequestCheckTx{Tx: []byte("tx-bytes"), Type: types.CheckTxType_Recheck}))
	add("request_finalize_block", types.ToRequestFinalizeBlock(&types.RequestFinalizeBlock{Txs: [][]byte{[]byte("a"), bytes.Repeat([]byte{1}, 300)}, Hash: bytes.Repeat([]byte{2}, 32), Height: 12, Time: t, ProposerAddress: bytes.Repeat([]byte{3}, 20)}))
	add("request_prepare_proposal", types.ToRequestPrepareProposal(&types.RequestPrepareProposal{MaxTxBytes: 1048576, Txs: [][]byte{[]byte("a")}, Height: 12, Time: t, ProposerAddress: bytes.Repeat([]byte{3}, 20)}))
	add("request_commit", types.ToRequestCommit())
	addResp("response_finalize_block", types.ToResponseFinalizeBlock(&types.ResponseFinalizeBlock{TxResults: []*types.ExecTxResult{{Code: 3, Data: []byte{9}, Log: "BAD_NONCE", Codespace: "perp", Events: []types.Event{{Type: "perp.fill", Attributes: []types.EventAttribute{{Key: "account", Value: "ab", Index: true}}}}}}, AppHash: bytes.Repeat([]byte{4}, 32)}))
	addResp("response_info", types.ToResponseInfo(&types.ResponseInfo{Data: "perpchain", Version: "perpchain/abci-1", AppVersion: 1, LastBlockHeight: 12, LastBlockAppHash: bytes.Repeat([]byte{4}, 32)}))
	addResp("response_commit", types.ToResponseCommit(&types.ResponseCommit{RetainHeight: 5}))
	addResp("response_exception", types.ToResponseException("boom"))
	enc := json.NewEncoder(os.Stdout)
	enc.SetIndent("", "  ")
	enc.Encode(out)
}
