package request_test

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/lethehq/lethe/hold"
	"github.com/lethehq/lethe/internal/lethetest"
	"github.com/lethehq/lethe/request"
)

// writeSigningKey writes key as requests.signing_key_file takes it (PKCS#8
// PEM) and returns the file's path.
func writeSigningKey(t *testing.T, key ed25519.PrivateKey) string {
	t.Helper()
	der, err := x509.MarshalPKCS8PrivateKey(key)
	require.NoError(t, err)
	p := filepath.Join(t.TempDir(), "signing.pem")
	require.NoError(t, os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600))
	return p
}

// shownAgain is req as a reader of request show --json gets it: through
// its JSON, so that receipt is what jsonb gave back, not lethe's bytes.
func shownAgain(t *testing.T, req *request.Request) *request.Request {
	t.Helper()
	b, err := json.Marshal(req)
	require.NoError(t, err)
	var out request.Request
	require.NoError(t, json.Unmarshal(b, &out))
	return &out
}

func TestSignedReceipts(t *testing.T) {
	t.Parallel()

	pub, key, err := ed25519.GenerateKey(rand.Reader)
	require.NoError(t, err)
	// The key comes through the config, as lethe worker gets it.
	p := lethetest.New(t, lethetest.CRMSchema, lethetest.CRMConfig+"  signing_key_file: "+writeSigningKey(t, key)+"\n")
	require.Equal(t, key, p.Config.Requests.SigningKey)
	groups := p.SeedCRM(t, 3)
	p.MustSweep(t)

	// An archived subject with two tickets: the receipts name a destroyed
	// key and each other, so that every field of a receipt is filled.
	archived := groups["due"][1]
	a := p.Submit(t, archived, "T-1", false)
	b := p.Submit(t, archived, "T-2", false)
	p.Work(t)
	for _, id := range []int64{a.ID, b.ID} {
		req := p.Get(t, id)
		require.Equal(t, request.StateCompleted, req.State)
		rc := lethetest.ReceiptOf(t, req)
		require.NotEmpty(t, rc.PartsMadeUnreadable)
		require.Len(t, rc.CompletedWith, 1)

		// receipt_bytes are the receipt: the same JSON, and they decode to
		// the same Receipt.
		require.NotEmpty(t, req.ReceiptBytes)
		require.JSONEq(t, string(*req.Receipt), string(req.ReceiptBytes))
		var signed request.Receipt
		require.NoError(t, json.Unmarshal(req.ReceiptBytes, &signed))
		require.Equal(t, rc, signed)
		require.Equal(t, id, signed.RequestID)

		require.Len(t, req.Signature, ed25519.SignatureSize)
		require.True(t, ed25519.Verify(pub, req.ReceiptBytes, req.Signature), "the signature must be pub's over receipt_bytes")
		require.NoError(t, request.VerifyReceipt(pub, req))
		require.NoError(t, request.VerifyReceipt(pub, shownAgain(t, req)))

		// The base64 of request show --json, which the README's openssl
		// check decodes.
		var fields map[string]any
		j, err := json.Marshal(req)
		require.NoError(t, err)
		require.NoError(t, json.Unmarshal(j, &fields))
		require.IsType(t, "", fields["receipt_bytes"])
		require.IsType(t, "", fields["signature"])
	}

	good := shownAgain(t, p.Get(t, a.ID))
	otherPub, _, err := ed25519.GenerateKey(rand.Reader)
	require.NoError(t, err)
	cases := []struct {
		name string
		pub  ed25519.PublicKey
		edit func(r *request.Request)
		want error
		says string
	}{
		{name: "a field of receipt edited", pub: pub,
			edit: func(r *request.Request) { setReceiptField(t, r, "found", false) },
			want: request.ErrReceiptEdited, says: `"found"`},
		{name: "a count of receipt edited", pub: pub,
			edit: func(r *request.Request) { setReceiptField(t, r, "rows_deleted", map[string]int{}) },
			want: request.ErrReceiptEdited, says: `"rows_deleted"`},
		{name: "a field added to receipt", pub: pub,
			edit: func(r *request.Request) { setReceiptField(t, r, "note", "also erased elsewhere") },
			want: request.ErrReceiptEdited, says: `"note"`},
		{name: "receipt_bytes edited", pub: pub,
			edit: func(r *request.Request) {
				r.ReceiptBytes = []byte(strings.Replace(string(r.ReceiptBytes), `"found":true`, `"found":false`, 1))
				setReceipt(t, r, r.ReceiptBytes)
			},
			want: request.ErrBadSignature, says: "does not match"},
		{name: "signature edited", pub: pub,
			edit: func(r *request.Request) { r.Signature[0] ^= 1 },
			want: request.ErrBadSignature},
		{name: "signature cut short", pub: pub,
			edit: func(r *request.Request) { r.Signature = r.Signature[:10] },
			want: request.ErrBadSignature, says: "10 bytes"},
		{name: "wrong public key", pub: otherPub,
			edit: func(*request.Request) {}, want: request.ErrBadSignature},
		{name: "signature removed", pub: pub,
			edit: func(r *request.Request) { r.Signature = nil },
			want: request.ErrUnsigned},
		{name: "receipt_bytes removed", pub: pub,
			edit: func(r *request.Request) { r.ReceiptBytes = nil },
			want: request.ErrUnsigned},
		{name: "another request's id", pub: pub,
			edit: func(r *request.Request) { r.ID = b.ID },
			want: request.ErrReceiptEdited, says: "request " + strconv.FormatInt(b.ID, 10)},
		{name: "another ticket", pub: pub,
			edit: func(r *request.Request) { r.Ticket = "T-2" },
			want: request.ErrReceiptEdited, says: "T-2"},
		{name: "another subject", pub: pub,
			edit: func(r *request.Request) { r.SubjectHMAC = strings.Repeat("0", 64) },
			want: request.ErrReceiptEdited, says: "subject"},
		{name: "no receipt", pub: pub,
			edit: func(r *request.Request) { r.Receipt = nil },
			want: request.ErrNoReceipt},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := shownAgain(t, good)
			tc.edit(r)
			err := request.VerifyReceipt(tc.pub, r)
			require.ErrorIs(t, err, tc.want)
			require.Contains(t, err.Error(), tc.says)
		})
	}
	require.Error(t, request.VerifyReceipt(pub[:16], good), "a key of the wrong length is refused, without a panic")
	require.NoError(t, request.VerifyReceipt(pub, good), "the cases edited copies only")

	// Without a key, receipts keep their bytes but have no signature.
	unsigned, err := request.NewEraser(request.EraserConfig{Pool: p.DB.Pool, Plan: p.Plan, Holds: hold.Checker{},
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	require.NoError(t, err)
	p.Eraser = unsigned
	c := p.Submit(t, groups["recent"][0], "T-3", false)
	p.Work(t)
	req := p.Get(t, c.ID)
	require.Equal(t, request.StateCompleted, req.State)
	require.Nil(t, req.Signature)
	require.JSONEq(t, string(*req.Receipt), string(req.ReceiptBytes))
	require.ErrorIs(t, request.VerifyReceipt(pub, shownAgain(t, req)), request.ErrUnsigned)
	j, err := json.Marshal(req)
	require.NoError(t, err)
	require.Contains(t, string(j), `"signature":null`)

	// An open request has neither.
	open := p.Submit(t, groups["active"][0], "T-4", false)
	require.Nil(t, open.ReceiptBytes)
	require.Nil(t, open.Signature)
	require.ErrorIs(t, request.VerifyReceipt(pub, open), request.ErrNoReceipt)
}

// setReceiptField sets one field of r's receipt object, leaving
// receipt_bytes and the signature as they are.
func setReceiptField(t *testing.T, r *request.Request, field string, value any) {
	t.Helper()
	var m map[string]any
	require.NoError(t, json.Unmarshal(*r.Receipt, &m))
	m[field] = value
	b, err := json.Marshal(m)
	require.NoError(t, err)
	setReceipt(t, r, b)
}

func setReceipt(t *testing.T, r *request.Request, b []byte) {
	t.Helper()
	raw := json.RawMessage(append([]byte(nil), b...))
	r.Receipt = &raw
}
