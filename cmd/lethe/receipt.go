package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"

	"github.com/lethehq/lethe/request"
)

func runReceipt(ctx context.Context, env *cliEnv, args []string) error {
	return dispatch(ctx, env, "receipt", args, subcommand{"verify", runReceiptVerify})
}

// runReceiptVerify checks a signed receipt with the signing key's public
// half. It reads no config and opens no database: whoever was handed a
// receipt (an auditor, the customer) can check it with lethe alone.
func runReceiptVerify(_ context.Context, env *cliEnv, args []string) error {
	var pubFile string
	fs := newFlagSet(env, "receipt verify", "--public-key FILE RECEIPT.json   (RECEIPT.json: what request show --json prints; - for stdin)")
	fs.StringVar(&pubFile, "public-key", "", "the Ed25519 public key in PEM, from openssl pkey -in key.pem -pubout")
	// The file may stand before, between or after the flags.
	var file string
	rest := args
	for {
		if err := parseFlagsOnly(fs, rest); err != nil {
			return err
		}
		rest = fs.Args()
		if len(rest) == 0 {
			break
		}
		if file != "" {
			return usagef("receipt verify: unexpected argument %q: give one RECEIPT.json", rest[0])
		}
		file, rest = rest[0], rest[1:]
	}
	if err := required("receipt verify", "public-key", pubFile); err != nil {
		return err
	}
	if file == "" {
		return usagef("receipt verify: give the RECEIPT.json to check (what lethe request show ID --json prints, or - for stdin)")
	}
	pemBytes, err := os.ReadFile(pubFile)
	if err != nil {
		return usagef("receipt verify: --public-key: cannot read %q: %v", pubFile, err)
	}
	pub, err := request.ParsePublicKey(pemBytes)
	if err != nil {
		return usagef("receipt verify: --public-key %s: %v", pubFile, err)
	}
	shown, err := readShownRequest(file)
	if err != nil {
		return err
	}
	if err := request.VerifyReceipt(pub, shown); err != nil {
		return fmt.Errorf("receipt verify: %s: %w", file, err)
	}
	fmt.Fprintf(env.stdout, "receipt of request %d (ticket %s) is intact and signed by this key\n", shown.ID, safeText(shown.Ticket))
	return nil
}

// readShownRequest reads the object that request show --json prints from
// file, or from stdin for "-". A file that cannot be read or is not one JSON
// object is a usage error; an object whose fields do not decode is a
// receipt that fails the check.
func readShownRequest(file string) (*request.Request, error) {
	var b []byte
	var err error
	if file == "-" {
		b, err = io.ReadAll(os.Stdin)
	} else {
		b, err = os.ReadFile(file)
	}
	if err != nil {
		return nil, usagef("receipt verify: cannot read %q: %v", file, err)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	var fields map[string]json.RawMessage
	err = dec.Decode(&fields)
	if err == nil && (dec.More() || fields == nil) {
		err = fmt.Errorf("not one object")
	}
	if err != nil {
		return nil, usagef("receipt verify: %s is not one JSON object (%v): give what lethe request show ID --json prints", file, err)
	}
	var shown request.Request
	if err := json.Unmarshal(b, &shown); err != nil {
		return nil, fmt.Errorf("receipt verify: %s: %w: %s", file, request.ErrReceiptEdited, badField(fields, err))
	}
	return &shown, nil
}

// badField names the field of a request object that does not decode (the
// errors of encoding/json do not always name it), with err's reason.
func badField(fields map[string]json.RawMessage, err error) string {
	for _, name := range sortedKeys(fields) {
		one, merr := json.Marshal(map[string]json.RawMessage{name: fields[name]})
		if merr != nil {
			continue
		}
		var r request.Request
		if ferr := json.Unmarshal(one, &r); ferr != nil {
			return fmt.Sprintf("field %q does not decode: %v", name, ferr)
		}
	}
	return fmt.Sprintf("a field does not decode: %v", err)
}
