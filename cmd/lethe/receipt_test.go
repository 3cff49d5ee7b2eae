package main_test

// Exec tests of signed receipts: a worker signs a request's receipt with
// requests.signing_key_file, and lethe receipt verify, or openssl alone,
// checks it offline with the public key.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// opensslCheck is the README's check of a receipt with openssl alone, run
// in a directory that holds receipt.json (from request show --json) and
// pub.pem.
const opensslCheck = `jq -r .receipt_bytes receipt.json | base64 -d > receipt.bin
jq -r .signature receipt.json | base64 -d > sig.bin
openssl pkeyutl -verify -pubin -inkey pub.pem -rawin -in receipt.bin -sigfile sig.bin
`

// tool returns the path of a program the test runs, failing clearly if it
// is not installed.
func tool(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	require.NoError(t, err, "%s is not on PATH: the signed-receipt tests run it (install openssl 3, jq and coreutils)", name)
	return p
}

// runIn runs a program in dir and returns its combined output and its exit
// code.
func runIn(t *testing.T, dir string, name string, args ...string) (string, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, tool(t, name), args...)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	var exitErr *exec.ExitError
	switch {
	case err == nil:
		return string(out), 0
	case errors.As(err, &exitErr):
		return string(out), exitErr.ExitCode()
	}
	require.NoError(t, err, "running %s %s", name, strings.Join(args, " "))
	return "", -1
}

// mustRunIn runs a program in dir and requires it to succeed.
func mustRunIn(t *testing.T, dir string, name string, args ...string) {
	t.Helper()
	out, code := runIn(t, dir, name, args...)
	require.Equal(t, 0, code, "%s %s:\n%s", name, strings.Join(args, " "), out)
}

// newKeyPair makes an Ed25519 key pair in dir with openssl, as the README
// says: <name>.pem (the signing key) and <name>.pub.pem.
func newKeyPair(t *testing.T, dir, name string) (key, pub string) {
	t.Helper()
	key, pub = filepath.Join(dir, name+".pem"), filepath.Join(dir, name+".pub.pem")
	mustRunIn(t, dir, "openssl", "genpkey", "-algorithm", "ed25519", "-out", key)
	mustRunIn(t, dir, "openssl", "pkey", "-in", key, "-pubout", "-out", pub)
	return key, pub
}

// letheStdin runs the binary with stdin.
func letheStdin(t *testing.T, stdin []byte, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, letheBin, args...)
	cmd.Env = cleanEnv()
	cmd.Dir = t.TempDir()
	cmd.Stdin = bytes.NewReader(stdin)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	res := result{args: args, stdout: stdout.String(), stderr: stderr.String()}
	var exitErr *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &exitErr):
		res.code = exitErr.ExitCode()
	default:
		require.NoError(t, err, "running lethe")
	}
	return res
}

// editShown returns the request show --json object shown with edit
// applied; numbers keep their digits.
func editShown(t *testing.T, shown []byte, edit func(m map[string]any)) []byte {
	t.Helper()
	dec := json.NewDecoder(bytes.NewReader(shown))
	dec.UseNumber()
	var m map[string]any
	require.NoError(t, dec.Decode(&m))
	edit(m)
	b, err := json.Marshal(m)
	require.NoError(t, err)
	return b
}

func TestSignedReceipt(t *testing.T) {
	t.Parallel()
	tool(t, "openssl")
	tool(t, "jq")
	tool(t, "base64")

	p := &privacy{shop: newShop(t, 0)}
	newKeyPair(t, p.dir, "key")
	// A relative signing_key_file is read from the config file's directory.
	require.Equal(t, 1, strings.Count(p.yaml, "requests:\n"))
	p.cfgPath = p.writeConfig(t, "lethe.yaml", strings.Replace(p.yaml, "requests:\n", "requests:\n  signing_key_file: key.pem\n", 1))
	p.w = startWorker(t, p.cfgPath)

	subject := p.keys(catGoneDue)[0]
	done := p.deleteRequest(t, subject, "SR-1")
	require.Equal(t, "completed", done.State)
	r := p.run(t, "request", "show", fmt.Sprint(done.ID), "--json")
	requireOK(t, r)
	shown := []byte(r.stdout)
	requireKeys(t, shown, "receipt", "receipt_bytes", "signature")
	r = p.run(t, "request", "show", fmt.Sprint(done.ID))
	requireOK(t, r)
	require.Contains(t, r.stdout, "signed:    yes", "%s", r)

	// The checks need neither the config nor the database: they run in a
	// directory of their own, with nothing but the receipt and the key.
	dir := t.TempDir()
	write := func(name string, b []byte) string {
		t.Helper()
		path := filepath.Join(dir, name)
		require.NoError(t, os.WriteFile(path, b, 0o600))
		return path
	}
	pubPEM, err := os.ReadFile(filepath.Join(p.dir, "key.pub.pem"))
	require.NoError(t, err)
	pub := write("pub.pem", pubPEM)
	receipt := write("receipt.json", shown)

	t.Run("lethe receipt verify", func(t *testing.T) {
		r := lethe(t, "receipt", "verify", "--public-key", pub, receipt)
		requireOK(t, r)
		require.Empty(t, r.stderr)
		require.Equal(t, fmt.Sprintf("receipt of request %d (ticket SR-1) is intact and signed by this key\n", done.ID), r.stdout)
		// The file may come first, and from stdin.
		requireOK(t, lethe(t, "receipt", "verify", receipt, "--public-key", pub))
		r = letheStdin(t, shown, "receipt", "verify", "--public-key", pub, "-")
		requireOK(t, r)
		require.Contains(t, r.stdout, "SR-1")
	})

	t.Run("refused", func(t *testing.T) {
		_, otherPub := newKeyPair(t, dir, "other")
		cases := []struct {
			name string
			pub  string
			edit func(m map[string]any)
			want []string
		}{
			{"a field of receipt edited", pub, func(m map[string]any) {
				m["receipt"].(map[string]any)["found"] = false
			}, []string{"receipt was edited", `"found"`}},
			{"the summary of receipt edited", pub, func(m map[string]any) {
				m["receipt"].(map[string]any)["summary"] = "deleted everything, twice"
			}, []string{"receipt was edited", `"summary"`}},
			{"receipt_bytes edited", pub, func(m map[string]any) {
				var rb []byte
				require.NoError(t, json.Unmarshal([]byte(`"`+m["receipt_bytes"].(string)+`"`), &rb))
				m["receipt_bytes"] = bytes.Replace(rb, []byte(`"ticket":"SR-1"`), []byte(`"ticket":"SR-2"`), 1)
			}, []string{"bad signature"}},
			{"another ticket", pub, func(m map[string]any) { m["ticket"] = "SR-9" }, []string{"receipt was edited", "SR-9"}},
			{"unsigned", pub, func(m map[string]any) { m["signature"] = nil }, []string{"not signed", "requests.signing_key_file"}},
			{"wrong public key", otherPub, func(map[string]any) {}, []string{"bad signature"}},
			{"no receipt", pub, func(m map[string]any) { m["receipt"] = nil }, []string{"no receipt"}},
			{"receipt_bytes not base64", pub, func(m map[string]any) { m["receipt_bytes"] = "@@@" }, []string{"receipt_bytes"}},
		}
		for _, tc := range cases {
			t.Run(tc.name, func(t *testing.T) {
				edited := write("edited.json", editShown(t, shown, tc.edit))
				r := lethe(t, "receipt", "verify", "--public-key", tc.pub, edited)
				requireOneLineError(t, r, 1, tc.want...)
				require.Empty(t, r.stdout)
			})
		}
	})

	t.Run("usage", func(t *testing.T) {
		rsaKey := filepath.Join(dir, "rsa.pem")
		mustRunIn(t, dir, "openssl", "genpkey", "-algorithm", "rsa", "-out", rsaKey)
		mustRunIn(t, dir, "openssl", "pkey", "-in", rsaKey, "-pubout", "-out", filepath.Join(dir, "rsa.pub.pem"))
		notJSON := write("not.json", []byte("receipt: yes\n"))
		list := write("list.json", []byte("["+string(shown)+"]"))
		cases := []struct {
			name string
			args []string
			want []string
		}{
			{"no public key", []string{receipt}, []string{"--public-key"}},
			{"no receipt file", []string{"--public-key", pub}, []string{"RECEIPT.json"}},
			{"two receipt files", []string{"--public-key", pub, receipt, receipt}, []string{"unexpected argument"}},
			{"public key that does not exist", []string{"--public-key", filepath.Join(dir, "nope.pem"), receipt}, []string{"--public-key", "nope.pem"}},
			{"receipt that does not exist", []string{"--public-key", pub, filepath.Join(dir, "nope.json")}, []string{"nope.json"}},
			{"private key as public key", []string{"--public-key", filepath.Join(p.dir, "key.pem"), receipt}, []string{"--public-key", "PUBLIC KEY"}},
			{"RSA public key", []string{"--public-key", filepath.Join(dir, "rsa.pub.pem"), receipt}, []string{"--public-key", "not an Ed25519 public key"}},
			{"receipt that is not JSON", []string{"--public-key", pub, notJSON}, []string{"not.json", "not one JSON object"}},
			{"a list, not one request", []string{"--public-key", pub, list}, []string{"list.json", "not one JSON object"}},
			{"unknown flag", []string{"--public-key", pub, "--key", pub, receipt}, []string{"-key"}},
		}
		for _, tc := range cases {
			t.Run(tc.name, func(t *testing.T) {
				r := lethe(t, append([]string{"receipt", "verify"}, tc.args...)...)
				requireOneLineError(t, r, 2, tc.want...)
			})
		}
		requireOneLineError(t, lethe(t, "receipt"), 2, "verify")
		requireOneLineError(t, lethe(t, "receipt", "check"), 2, "verify")
	})

	t.Run("openssl alone", func(t *testing.T) {
		out, code := runIn(t, dir, "bash", "-euo", "pipefail", "-c", opensslCheck)
		require.Equal(t, 0, code, out)
		require.Contains(t, out, "Signature Verified Successfully")
		// receipt.bin is what was signed: the receipt that receipt shows.
		signed, err := os.ReadFile(filepath.Join(dir, "receipt.bin"))
		require.NoError(t, err)
		require.JSONEq(t, string(done.Receipt), string(signed))

		// Edited bytes fail the same check.
		edited := bytes.Replace(signed, []byte(`"found":true`), []byte(`"found":false`), 1)
		require.NotEqual(t, signed, edited)
		write("receipt.bin", edited)
		out, code = runIn(t, dir, "openssl", "pkeyutl", "-verify", "-pubin", "-inkey", "pub.pem", "-rawin", "-in", "receipt.bin", "-sigfile", "sig.bin")
		require.NotEqual(t, 0, code, out)
		require.Contains(t, out, "Signature Verification Failure")
	})
}

// TestSigningKeyErrors checks that a requests.signing_key_file that is not
// an Ed25519 private key in PKCS#8 PEM stops lethe with exit 2 and one line
// naming the key, and changes nothing.
func TestSigningKeyErrors(t *testing.T) {
	t.Parallel()
	tool(t, "openssl")
	b := newBadInput(t)
	dir := t.TempDir()
	rsaKey := filepath.Join(dir, "rsa.pem")
	mustRunIn(t, dir, "openssl", "genpkey", "-algorithm", "rsa", "-out", rsaKey)
	edKey, edPub := newKeyPair(t, dir, "ed")
	notPEM := filepath.Join(dir, "key.txt")
	require.NoError(t, os.WriteFile(notPEM, []byte("this is not a key\n"), 0o600))

	cases := []struct {
		name string
		file string
		want []string
	}{
		{"RSA key", rsaKey, []string{"not an Ed25519 key"}},
		{"not PEM", notPEM, []string{"PEM"}},
		{"public key", edPub, []string{"PRIVATE KEY"}},
		{"missing file", filepath.Join(dir, "nope.pem"), []string{"nope.pem"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			cfg := b.variant(t, "requests:\n", "requests:\n  signing_key_file: "+tc.file+"\n")
			for _, args := range [][]string{{"worker"}, {"request", "list"}, {"status"}} {
				r := letheWith(t, 30*time.Second, nil, append(args, "--config", cfg)...)
				line := requireOneLineError(t, r, 2, append([]string{"requests.signing_key_file"}, tc.want...)...)
				// Never a line of the key itself.
				if b, err := os.ReadFile(tc.file); err == nil {
					for _, l := range strings.Split(string(b), "\n")[1:] {
						if len(l) > 16 && !strings.HasPrefix(l, "-----") {
							require.NotContains(t, line, l[:16])
						}
					}
				}
			}
			b.requireUnchanged(t)
		})
	}
	// The same config with an Ed25519 key is accepted.
	cfg := b.variant(t, "requests:\n", "requests:\n  signing_key_file: "+edKey+"\n")
	requireOK(t, lethe(t, "request", "list", "--config", cfg))
}
