package request

import (
	"bytes"
	"crypto/ed25519"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"reflect"
	"slices"
)

// A receipt is signed over its canonical bytes: the json.Marshal of the
// Receipt that lethe stores, kept as they are in receipt_bytes. The receipt
// column holds the same JSON, but as jsonb, which keeps neither the order of
// keys nor the bytes, so the signature could not be checked against it.

// Errors of VerifyReceipt. Each comes wrapped with what exactly is wrong.
var (
	// ErrNoReceipt means the request has no receipt: it has not completed.
	ErrNoReceipt = errors.New("no receipt")
	// ErrUnsigned means the receipt carries no signature.
	ErrUnsigned = errors.New("receipt is not signed")
	// ErrBadSignature means the signature does not match receipt_bytes
	// under the public key.
	ErrBadSignature = errors.New("bad signature")
	// ErrReceiptEdited means the signature is good, but the receipt or the
	// request around it says something other than the signed bytes.
	ErrReceiptEdited = errors.New("receipt was edited")
)

// canonicalReceipt returns the bytes that lethe stores, shows and signs for
// rc.
func canonicalReceipt(rc *Receipt) ([]byte, error) {
	b, err := json.Marshal(rc)
	if err != nil {
		return nil, fmt.Errorf("error writing receipt: %w", err)
	}
	return b, nil
}

// signReceipt returns rc's canonical bytes and, when key is not nil, their
// Ed25519 signature (nil without a key).
func signReceipt(key ed25519.PrivateKey, rc *Receipt) (b, sig []byte, err error) {
	if b, err = canonicalReceipt(rc); err != nil {
		return nil, nil, err
	}
	if key != nil {
		sig = ed25519.Sign(key, b)
	}
	return b, sig, nil
}

// ParsePublicKey parses an Ed25519 public key in PEM (SubjectPublicKeyInfo,
// -----BEGIN PUBLIC KEY-----), as "openssl pkey -pubout" writes it from the
// key of requests.signing_key_file.
func ParsePublicKey(b []byte) (ed25519.PublicKey, error) {
	block, _ := pem.Decode(b)
	if block == nil || block.Type != "PUBLIC KEY" {
		return nil, errors.New("not a PEM public key (-----BEGIN PUBLIC KEY-----): write it from the signing key with openssl pkey -in key.pem -pubout")
	}
	key, err := x509.ParsePKIXPublicKey(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("not a SubjectPublicKeyInfo public key: %v", err)
	}
	pub, ok := key.(ed25519.PublicKey)
	if !ok {
		return nil, fmt.Errorf("a %T, not an Ed25519 public key: receipts are signed with Ed25519 (openssl genpkey -algorithm ed25519)", key)
	}
	return pub, nil
}

// VerifyReceipt checks a request's signed receipt, as request show --json
// prints it, with the public key of requests.signing_key_file. It checks
// that the signature is pub's over receipt_bytes, that receipt is the same
// JSON as receipt_bytes, and that the signed receipt is the request's own
// (same id, ticket and subject HMAC). It needs no database. The error wraps
// ErrNoReceipt, ErrUnsigned, ErrBadSignature or ErrReceiptEdited, and says
// what differs.
func VerifyReceipt(pub ed25519.PublicKey, shown *Request) error {
	if len(pub) != ed25519.PublicKeySize {
		// ed25519.Verify panics on a key of another length.
		return fmt.Errorf("the public key has %d bytes, not the %d of an Ed25519 key", len(pub), ed25519.PublicKeySize)
	}
	if shown.Receipt == nil || string(bytes.TrimSpace(*shown.Receipt)) == "null" {
		if shown.State == StateCompleted {
			return fmt.Errorf("%w: request %d (ticket %s) says completed but carries no receipt; give the object request show --json prints, unchanged",
				ErrNoReceipt, shown.ID, shown.Ticket)
		}
		return fmt.Errorf("%w: request %d (ticket %s) is %s; only a completed request has one", ErrNoReceipt, shown.ID, shown.Ticket, shown.State)
	}
	if len(shown.Signature) == 0 {
		return fmt.Errorf("%w: request %d (ticket %s) has no signature: it was completed while requests.signing_key_file was not set, so there is nothing to check",
			ErrUnsigned, shown.ID, shown.Ticket)
	}
	if len(shown.ReceiptBytes) == 0 {
		return fmt.Errorf("%w: request %d (ticket %s) has a signature but no receipt_bytes, which is what it signs; give the object request show --json prints, unchanged",
			ErrUnsigned, shown.ID, shown.Ticket)
	}
	if len(shown.Signature) != ed25519.SignatureSize {
		return fmt.Errorf("%w: the signature has %d bytes, not the %d of an Ed25519 signature", ErrBadSignature, len(shown.Signature), ed25519.SignatureSize)
	}
	if !ed25519.Verify(pub, shown.ReceiptBytes, shown.Signature) {
		return fmt.Errorf("%w: the signature over receipt_bytes of request %d (ticket %s) does not match this public key: receipt_bytes or signature were changed, or another key signed it",
			ErrBadSignature, shown.ID, shown.Ticket)
	}
	// The bytes are lethe's own from here on: what remains to check is
	// that the object around them says the same.
	signed, err := decodeJSON(shown.ReceiptBytes)
	if err != nil {
		return fmt.Errorf("%w: receipt_bytes are signed but are not JSON: %v", ErrReceiptEdited, err)
	}
	object, err := decodeJSON(*shown.Receipt)
	if err != nil {
		return fmt.Errorf("%w: receipt is not JSON: %v", ErrReceiptEdited, err)
	}
	if field, ok := differs(signed, object); ok {
		return fmt.Errorf("%w: receipt differs from the signed receipt_bytes in %s; trust receipt_bytes", ErrReceiptEdited, field)
	}
	var rc Receipt
	if err := json.Unmarshal(shown.ReceiptBytes, &rc); err != nil {
		return fmt.Errorf("%w: receipt_bytes are signed but are not a receipt: %v", ErrReceiptEdited, err)
	}
	if rc.RequestID != shown.ID || rc.Ticket != shown.Ticket {
		return fmt.Errorf("%w: the signed receipt is of request %d (ticket %s), but the object says request %d (ticket %s)",
			ErrReceiptEdited, rc.RequestID, rc.Ticket, shown.ID, shown.Ticket)
	}
	if rc.SubjectHMAC != shown.SubjectHMAC {
		return fmt.Errorf("%w: the signed receipt is of subject %s, but the object says subject_hmac %s",
			ErrReceiptEdited, rc.SubjectHMAC, shown.SubjectHMAC)
	}
	return nil
}

// decodeJSON decodes b keeping numbers as they are written, so that no
// large integer is rounded through a float64 before the comparison.
func decodeJSON(b []byte) (any, error) {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, err
	}
	if dec.More() {
		return nil, errors.New("data after the JSON value")
	}
	return v, nil
}

// differs reports whether two decoded JSON documents differ, and if so
// where: the first top-level key, in order, whose value differs, or
// "the whole document".
func differs(a, b any) (string, bool) {
	if reflect.DeepEqual(a, b) {
		return "", false
	}
	am, aok := a.(map[string]any)
	bm, bok := b.(map[string]any)
	if !aok || !bok {
		return "the whole document", true
	}
	keys := make([]string, 0, len(am)+len(bm))
	for k := range am {
		keys = append(keys, k)
	}
	for k := range bm {
		if _, ok := am[k]; !ok {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	for _, k := range keys {
		av, ina := am[k]
		bv, inb := bm[k]
		switch {
		case !ina:
			return fmt.Sprintf("field %q, which the signed receipt has not", k), true
		case !inb:
			return fmt.Sprintf("field %q, which is missing", k), true
		case !reflect.DeepEqual(av, bv):
			return fmt.Sprintf("field %q", k), true
		}
	}
	return "the whole document", true
}
