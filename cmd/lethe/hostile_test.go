package main_test

// Exec tests with hostile input: subject keys that quoting, encoding,
// normalisation or a terminal would mangle; keys that are not text at all;
// config predicates and names that try to smuggle in a second statement; an
// age identity where the worker expects a recipient; and archive objects
// that are truncated, altered or swapped when lethe restore reads them.

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"filippo.io/age"
	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/stretchr/testify/require"
)

// hostileKeys are subject keys for a text-keyed schema that every layer
// must carry byte for byte: SQL and JSON quoting, format verbs, LIKE
// wildcards, flag-like keys, Unicode that normalisation would merge (the
// decomposed and the composed Zoé are two subjects), bidirectional
// overrides, emoji sequences, invisible characters, control characters,
// and a 10 KB key.
var hostileKeys = []string{
	`it's "quoted" \ back\\slash \n not-a-newline`,
	`100% _like_ %`,
	`%s %d %!x(MISSING) %v {{.}} ${HOME} $1 $$`,
	`' OR '1'='1`,
	`--json`,
	`-h`,
	"Zoe\u0301",            // e + combining acute accent
	"Zo\u00e9",             // the same, composed: another subject
	"\u202Eevil\u202C.txt", // right-to-left override
	"مرحبا ٣ שלום",         // Arabic and Hebrew, right to left
	"👩‍👩‍👧‍👦 family 🇫🇷 🦊",            // ZWJ sequence, flag, plain emoji
	"zero\u200bwidth\ufeffbom\u00a0", // invisible characters
	"\uffff non-character \U0010FFFD",
	"new\nline\ttab\rreturn",
	"esc \x1b[31mred\x1b[0m bell\x07",
	strings.Repeat("ten-kilobyte-key-é-", 540), // 10,800 bytes
}

// addHostileClients inserts each key of keys as a due former client of the
// shop, with contracts, devices and tickets.
func addHostileClients(t *testing.T, s *shop, keys []string) {
	t.Helper()
	ctx := context.Background()
	for i, k := range keys {
		_, err := s.db.Pool.Exec(ctx, `INSERT INTO shop.clients (code, state, left_at, created_at, profile, credit, ext)
			VALUES ($1, 'gone', now() - interval '800 days', now() - interval '1200 days',
			        jsonb_build_object('key', $1::text, 'i', $2::int), 12.5, gen_random_uuid())`, k, i)
		require.NoError(t, err, "key %q", k)
		_, err = s.db.Pool.Exec(ctx, `
			WITH c AS (INSERT INTO shop.contracts (id, client_code, total, signed)
			           VALUES (gen_random_uuid(), $1, 99.95, current_date - 900) RETURNING id)
			INSERT INTO shop.devices (id, contract_id, imei, attrs)
			SELECT 900000 + $2::int, c.id, '3500000000' || lpad($2::text, 5, '0'), jsonb_build_object('owner', $1::text) FROM c`, k, i)
		require.NoError(t, err, "key %q", k)
		_, err = s.db.Pool.Exec(ctx, `INSERT INTO shop.tickets (client_code, body) VALUES ($1, 'about ' || $1)`, k)
		require.NoError(t, err, "key %q", k)
	}
}

// TestHostileKeysRoundTrip checks that sweep archives subjects whose keys
// are hostile, each under the HMAC of its exact bytes, and that restore,
// hold and request find each by the same key and give it back exactly.
func TestHostileKeysRoundTrip(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := newShop(t, 7) // pages that split the hostile keys
	addHostileClients(t, s, hostileKeys)
	before := dumpShop(t, s.db.Pool)
	start := time.Now()
	cfg := []string{"--config", s.cfgPath}

	r := lethe(t, append([]string{"sweep", "--wait"}, cfg...)...)
	requireOK(t, r)
	segments := map[string]bool{}
	for _, v := range listVersions(t, s.bucket) {
		segments[v.key] = true
	}
	for _, k := range hostileKeys {
		loc := s.locate(t, k)
		require.Equal(t, s.hmacOf(k), loc.SubjectHMAC, "archived under the HMAC of %q", k)
		require.True(t, segments[loc.Segment], "no segment holds %q", k)
		require.Equal(t, "archived", loc.State)
		for _, table := range shopTables {
			require.Zero(t, dumpShop(t, s.db.Pool).count(table, k), "%s still has rows of %q", table, k)
		}
	}
	require.NotEqual(t, s.locate(t, "Zoe\u0301").SubjectHMAC, s.locate(t, "Zo\u00e9").SubjectHMAC, "two subjects, two entries")

	// restore by the same key gives back exactly that subject's rows.
	dir := t.TempDir()
	for i, k := range hostileKeys {
		out := filepath.Join(dir, fmt.Sprintf("bundle-%d.json", i))
		r := lethe(t, append([]string{"restore", "--subject", k, "--identity", s.idPath, "--out", out}, cfg...)...)
		requireOK(t, r)
		require.NotContains(t, strings.TrimSuffix(r.stderr, "\n"), "\n", "restore's report of %q is not one line", k)
		require.NotContains(t, r.stderr, "\x1b", "restore's report writes a raw escape character")
		plaintext, err := os.ReadFile(out)
		require.NoError(t, err)
		checkBundle(t, plaintext, k, "gone", before, start)
	}
	r = lethe(t, append([]string{"restore", "--subject", "Zoe\u0301", "--identity", s.idPath}, cfg...)...)
	requireOK(t, r)
	var b struct{ Subject string }
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &b))
	require.Equal(t, "Zoe\u0301", b.Subject, "restore normalised the key")

	// hold place and hold list carry every key exactly.
	args := []string{"hold", "place", "--matter", "M-hostile", "--reason", "r", "--by", "legal", "--json"}
	for _, k := range hostileKeys {
		args = append(args, "--subject", k)
	}
	requireOK(t, lethe(t, append(args, cfg...)...))
	r = lethe(t, append([]string{"hold", "list", "--json"}, cfg...)...)
	requireOK(t, r)
	var holds []struct{ Subject string }
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &holds), "%s", r)
	var listed []string
	for _, h := range holds {
		listed = append(listed, h.Subject)
	}
	require.ElementsMatch(t, hostileKeys, listed)
	for _, k := range []string{"Zoe\u0301", hostileKeys[len(hostileKeys)-1], "--json"} {
		r = lethe(t, append([]string{"hold", "list", "--subject", k, "--json"}, cfg...)...)
		requireOK(t, r)
		require.NoError(t, json.Unmarshal([]byte(r.stdout), &holds), "%s", r)
		require.Len(t, holds, 1, "hold list --subject %q", k)
		require.Equal(t, k, holds[0].Subject)
	}
	requireOK(t, lethe(t, append([]string{"hold", "release", "--matter", "M-hostile", "--by", "legal"}, cfg...)...))

	// A deletion request by a hostile key erases that subject and no other.
	w := startWorker(t, s.cfgPath)
	p := &privacy{shop: s, w: w}
	for i, k := range []string{"Zoe\u0301", hostileKeys[len(hostileKeys)-1], `' OR '1'='1`, "%s %d %!x(MISSING) %v {{.}} ${HOME} $1 $$"} {
		req := p.deleteRequest(t, k, fmt.Sprintf("H-%d", i))
		require.Equal(t, "completed", req.State, "request for %q", k)
		rc := req.receipt(t)
		require.Equal(t, s.hmacOf(k), rc.SubjectHMAC)
		require.Len(t, rc.PartsMadeUnreadable, 1, "request for %q", k)
		require.Equal(t, "erased", s.locate(t, k).State)
		require.NotContains(t, string(req.Receipt), k)
	}
	require.Equal(t, "archived", s.locate(t, "Zo\u00e9").State, "erasing the decomposed Zoé erased the composed one")
	w.stop(t, syscall.SIGTERM)

	var live int
	require.NoError(t, s.db.Pool.QueryRow(ctx, `SELECT count(*) FROM lethe.manifest WHERE wrapped_key IS NOT NULL`).Scan(&live))
	require.Equal(t, len(s.keys(catGoneDue))+len(hostileKeys)-4, live)
	p.requireAuditIntact(t)
}

// TestHostileKeysInTextOutput checks that the text listings, which print a
// subject key in a table, do not let a key's control characters through to
// the operator's terminal: a newline would forge a line of the listing, and
// an escape sequence would rewrite what is on the screen.
func TestHostileKeysInTextOutput(t *testing.T) {
	t.Parallel()
	s := newShop(t, 0)
	cfg := []string{"--config", s.cfgPath}
	const forged = "legit\nM-forged  admin-key  2000-01-01 00:00:00  legal  nothing to see"
	const escape = "esc \x1b[2J\x1b[31mred\x1b[0m bell\x07"
	requireOK(t, lethe(t, append([]string{"hold", "place", "--matter", "M-1", "--subject", forged, "--subject", escape,
		"--reason", "r", "--by", "legal"}, cfg...)...))
	for _, args := range [][]string{
		{"hold", "list"},
		{"request", "delete", "--subject", escape, "--ticket", "T-esc", "--by", "privacy"},
		{"request", "delete", "--subject", forged, "--ticket", "T-nl", "--by", "privacy"},
		{"request", "show", "--ticket", "T-esc"},
		{"request", "show", "--ticket", "T-nl"},
		{"request", "list"},
	} {
		t.Run(strings.Join(args[:2], " ")+" "+args[len(args)-1], func(t *testing.T) {
			r := lethe(t, append(args, cfg...)...)
			requireOK(t, r)
			for _, out := range []string{r.stdout, r.stderr} {
				require.NotContains(t, out, "\x1b", "lethe %s prints a raw escape character\n%q", strings.Join(args, " "), out)
				require.NotContains(t, out, "\x07", "lethe %s prints a raw bell\n%q", strings.Join(args, " "), out)
				require.NotContains(t, out, "\nM-forged", "lethe %s lets a key forge a line\n%s", strings.Join(args, " "), out)
			}
		})
	}
}

// TestHostileKeyNotText checks keys that are not text. A NUL byte cannot
// reach lethe at all: no argument of a Unix process can hold one, so the
// operating system refuses to start the command (the first subtest holds
// that fact). Bytes that are not UTF-8 do reach it, and no subject of a
// text-keyed (or any) table can have them: request delete, hold place and
// restore must refuse them with exit 2 and one line that says so, and
// change nothing.
func TestHostileKeyNotText(t *testing.T) {
	t.Parallel()
	b := newBadInput(t)
	p := &privacy{shop: b.shop}
	counts := p.counts(t)

	t.Run("NUL cannot be passed", func(t *testing.T) {
		cmd := exec.Command(letheBin, "request", "delete", "--subject", "nul\x00key", "--ticket", "N-1", "--by", "privacy", "--config", b.cfgPath)
		err := cmd.Run()
		require.Error(t, err)
		require.True(t, errors.Is(err, syscall.EINVAL), "starting a command with a NUL in an argument: %v", err)
		require.Nil(t, cmd.ProcessState, "the command started")
	})

	for _, key := range []string{"\xff\xfe", "abc\xc3(", "ok-prefix \xed\xa0\x80 surrogate"} {
		for _, args := range [][]string{
			{"request", "delete", "--subject", key, "--ticket", "U-1", "--by", "privacy"},
			{"hold", "place", "--matter", "M-u", "--subject", key, "--reason", "r", "--by", "legal"},
			{"restore", "--subject", key, "--identity", b.idPath, "--out", filepath.Join(t.TempDir(), "out.json")},
		} {
			t.Run(fmt.Sprintf("%s %s %q", args[0], args[1], key), func(t *testing.T) {
				r := lethe(t, append(args, "--config", b.cfgPath)...)
				line := requireOneLineError(t, r, 2, "--subject")
				require.True(t, strings.Contains(line, "UTF-8") || strings.Contains(line, "text"), "the message does not say what is wrong: %s", line)
				require.Empty(t, r.stdout)
				b.requireUnchanged(t)
				require.Equal(t, counts, p.counts(t), "lethe's request or hold tables changed")
			})
		}
	}
}

// TestHostileConfigInjection checks config values that try to run a second
// statement or reach past lethe's own SQL, beyond the where cases of
// TestConfigErrors: through requests.protect, through dollar quoting, an E”
// string, a block comment, a NUL or a newline, a data-modifying subquery,
// and through the names lethe quotes (table, key, clock, join). Each must
// stop every command with exit 2 naming the key, and the shop must be whole.
func TestHostileConfigInjection(t *testing.T) {
	t.Parallel()
	b := newBadInput(t)
	const where = `where: "state = 'gone'"`
	const protect = `protect: "state = 'active'"`
	cases := []struct {
		name, old, new, key string
	}{
		{"protect with a second statement", protect, `protect: "state = 'active'; DROP TABLE shop.tickets"`, "requests.protect"},
		{"protect closing lethe's parenthesis", protect, `protect: "true) OR (true"`, "requests.protect"},
		{"where with dollar quoting", where, `where: "state = $$gone$$"`, "policies[0].where"},
		{"where with a dollar-quoted statement", where, `where: "state = $x$'; DROP TABLE shop.tickets; --$x$"`, "policies[0].where"},
		{"where with an E'' string hiding a quote", where, `where: "state = E'\\' OR true; DROP TABLE shop.tickets; --'"`, "policies[0].where"},
		{"where with a block comment", where, `where: "state = 'gone' /* ; DROP TABLE shop.tickets */"`, "policies[0].where"},
		{"where with a NUL", where, `where: "state = 'gone'\0; DROP TABLE shop.tickets"`, "policies[0].where"},
		{"where with a newline before a statement", where, `where: "state = 'gone'\n; DROP TABLE shop.tickets"`, "policies[0].where"},
		{"where with a data-modifying subquery", where, `where: "state = 'gone' AND EXISTS (WITH d AS (DELETE FROM shop.tickets RETURNING 1) SELECT 1 FROM d)"`, "policies[0].where"},
		{"where with a parameter", where, `where: "state = $1"`, "policies[0].where"},
		{"table with a statement", "  table: shop.clients\n", "  table: \"shop.clients; DROP TABLE shop.tickets\"\n", "subject.table"},
		{"table quoted to a statement", "- table: shop.tickets", `- table: 'shop."tickets; DROP TABLE shop.contracts; --"'`, "subject.related[1].table"},
		{"key with a statement", "key: code", `key: "code; DROP TABLE shop.tickets"`, "subject.key"},
		{"clock with a statement", "clock: left_at", `clock: "left_at) OR true; DROP TABLE shop.tickets; --"`, "policies[0].clock"},
		{"join with a statement", "join: contract_id = id", `join: "contract_id = id; DROP TABLE shop.tickets"`, "subject.related[0].related[0].join"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			cfg := b.variant(t, tc.old, tc.new)
			for _, args := range [][]string{{"sweep", "--dry-run"}, {"sweep", "--wait"}, {"worker"}, {"request", "delete", "--subject", "x", "--ticket", "I-1", "--by", "p"}} {
				r := letheWith(t, 30*time.Second, nil, append(args, "--config", cfg)...)
				requireOneLineError(t, r, 2, tc.key)
			}
			b.requireUnchanged(t)
			for _, table := range []string{"shop.clients", "shop.contracts", "shop.devices", "shop.tickets"} {
				var exists bool
				require.NoError(t, b.db.Pool.QueryRow(context.Background(), `SELECT to_regclass($1) IS NOT NULL`, table).Scan(&exists))
				require.True(t, exists, "%s was dropped", table)
			}
		})
	}
}

// TestWorkerRefusesIdentity checks, beyond the "identity given as
// recipient" case of TestConfigErrors, every way an identity can reach the
// worker's recipients: in a recipients_file as age-keygen writes it, as the
// second of several recipients, in lower case, and from ${VAR}. lethe worker
// must exit 2 without starting, name the key, and print no part of the
// secret.
func TestWorkerRefusesIdentity(t *testing.T) {
	t.Parallel()
	b := newBadInput(t)
	id := b.identity // the shop's own identity: a real key pair
	secret := id.String()
	body := strings.TrimPrefix(secret, "AGE-SECRET-KEY-1")
	recipient := id.Recipient().String()
	keygenFile := filepath.Join(t.TempDir(), "identity.txt")
	require.NoError(t, os.WriteFile(keygenFile, []byte("# created: 2026-01-01T00:00:00Z\n# public key: "+recipient+"\n"+secret+"\n"), 0o600))
	cases := []struct {
		name, new string
		env       []string
		key       string
	}{
		{"identity file as recipients_file", "    - " + recipient + "\n  recipients_file: " + keygenFile, nil, "archive.recipients"},
		{"identity as the second recipient", "    - " + recipient + "\n    - " + secret, nil, "archive.recipients[1]"},
		{"identity in lower case", "    - " + strings.ToLower(secret), nil, "archive.recipients[0]"},
		{"identity from the environment", "    - ${LETHE_TEST_RECIPIENT}", []string{"LETHE_TEST_RECIPIENT=" + secret}, "archive.recipients[0]"},
		{"identity with spaces around", "    - \"  " + secret + "  \"", nil, "archive.recipients[0]"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			cfg := b.variant(t, "    - "+recipient, tc.new)
			start := time.Now()
			r := letheWith(t, 30*time.Second, tc.env, "worker", "--config", cfg, "--log-level", "debug")
			require.Less(t, time.Since(start), 20*time.Second, "the worker ran")
			line := requireOneLineError(t, r, 2, tc.key, "identity")
			require.Empty(t, r.stdout)
			for _, out := range []string{line, r.stdout, r.stderr} {
				for _, part := range []string{secret, body, strings.ToLower(body), body[:16], body[len(body)-16:]} {
					require.NotContains(t, out, part, "the message gives the identity away")
					require.NotContains(t, strings.ToLower(out), strings.ToLower(part), "the message gives the identity away")
				}
			}
			require.NotContains(t, r.stderr, "worker started")
			b.requireUnchanged(t)
		})
	}
}

// TestWorkerRefusesSSHPrivateKey checks the mistake age invites: an SSH
// private key is an age identity too, and recipients_file pointed at
// ~/.ssh/id_ed25519 instead of its .pub. The worker must refuse it with
// exit 2 and print no line of the key.
func TestWorkerRefusesSSHPrivateKey(t *testing.T) {
	t.Parallel()
	b := newBadInput(t)
	recipient := b.identity.Recipient().String()
	raw := make([]byte, 300)
	for i := range raw {
		raw[i] = byte(i*7 + 3)
	}
	copy(raw, "openssh-key-v1\x00")
	body := base64.StdEncoding.EncodeToString(raw)
	var lines []string
	for len(body) > 70 {
		lines = append(lines, body[:70])
		body = body[70:]
	}
	lines = append(lines, body)
	key := "-----BEGIN OPENSSH PRIVATE KEY-----\n" + strings.Join(lines, "\n") + "\n-----END OPENSSH PRIVATE KEY-----\n"
	file := filepath.Join(t.TempDir(), "id_ed25519")
	require.NoError(t, os.WriteFile(file, []byte(key), 0o600))
	cfg := b.variant(t, "    - "+recipient, "    - "+recipient+"\n  recipients_file: "+file)
	r := letheWith(t, 30*time.Second, nil, "worker", "--config", cfg)
	requireOneLineError(t, r, 2, "archive.recipients_file", "not age recipients")
	for _, l := range lines {
		require.NotContains(t, r.stderr, l[:20], "the message prints a line of the private key")
	}
	require.Empty(t, r.stdout)
	b.requireUnchanged(t)
}

// ---------------------------------------------------------------------------
// Corrupted archive objects.

// TestRestoreCorruptPart checks restore against parts that are truncated
// (at an age chunk boundary, inside a chunk, after the header, to nothing),
// altered (a bit of the payload or of the header), extended, or whole age
// files to the subject's key whose bundle is cut short, lacks a table, or
// is another subject's part. Each is put by the bucket's root account as a
// new version of the segment, and reached two ways: the manifest names it
// with its own SHA-256, so that only decryption and decoding can notice;
// and with the old SHA-256. While the manifest is untouched, the good part
// restores though the segment's newest version is the corrupt one. Every
// time restore must exit 1 on one line, write no file (not even a partial
// one) and nothing to standard output, and audit no restore.
func TestRestoreCorruptPart(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := newShop(t, 0)
	const subject = "big-subject-1"
	const other = "big-subject-2"
	addHostileClients(t, s, []string{subject, other})
	// Enough rows for several 64 KiB age chunks.
	_, err := s.db.Pool.Exec(ctx, `INSERT INTO shop.tickets (client_code, body)
		SELECT $1, repeat(md5(g::text), 32) FROM generate_series(1, 250) g`, subject)
	require.NoError(t, err)
	before := dumpShop(t, s.db.Pool)
	start := time.Now()
	requireOK(t, lethe(t, "sweep", "--wait", "--config", s.cfgPath))

	loc := s.locate(t, subject)
	reader := s.bucket.Server.Client(s.bucket.Server.Reader)
	root := s.bucket.Server.Client(s.bucket.Server.Root)
	part := func(l located) []byte {
		out, err := reader.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String(s.bucket.Name), Key: aws.String(l.Segment),
			VersionId: aws.String(l.VersionID), Range: aws.String(fmt.Sprintf("bytes=%d-%d", l.Offset, l.Offset+l.Length-1))})
		require.NoError(t, err)
		defer out.Body.Close()
		b, err := io.ReadAll(out.Body)
		require.NoError(t, err)
		return b
	}
	good := part(loc)
	otherPart := part(s.locate(t, other))
	seg, err := reader.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String(s.bucket.Name), Key: aws.String(loc.Segment), VersionId: aws.String(loc.VersionID)})
	require.NoError(t, err)
	whole, err := io.ReadAll(seg.Body)
	seg.Body.Close()
	require.NoError(t, err)
	// The subject's own key, as the master identity unwraps it.
	wrapped, err := age.Decrypt(bytes.NewReader(loc.WrappedKey), s.identity)
	require.NoError(t, err)
	keyText, err := io.ReadAll(wrapped)
	require.NoError(t, err)
	subjectKey, err := age.ParseX25519Identity(strings.TrimSpace(string(keyText)))
	require.NoError(t, err)
	plaintext, err := age.Decrypt(bytes.NewReader(good), subjectKey)
	require.NoError(t, err)
	goodPlain, err := io.ReadAll(plaintext)
	require.NoError(t, err)
	require.Greater(t, len(goodPlain), 3*64<<10, "the bundle must span several age chunks")
	_, err = age.Decrypt(bytes.NewReader(good), s.identity)
	require.Error(t, err, "the master identity opens the part itself")

	// The age payload: the header ends with "\n--- <mac>\n", then a 16-byte
	// nonce, then chunks of 64 KiB + 16 bytes of tag.
	headerEnd := bytes.Index(good, []byte("\n--- "))
	require.Positive(t, headerEnd)
	headerEnd += bytes.IndexByte(good[headerEnd+1:], '\n') + 2
	const chunk = 64<<10 + 16
	payload := headerEnd + 16
	encrypt := func(plain []byte) []byte {
		var buf bytes.Buffer
		w, err := age.Encrypt(&buf, subjectKey.Recipient())
		require.NoError(t, err)
		_, err = w.Write(plain)
		require.NoError(t, err)
		require.NoError(t, w.Close())
		return buf.Bytes()
	}
	flip := func(b []byte, i int) []byte {
		c := bytes.Clone(b)
		c[i] ^= 0x01
		return c
	}
	var bundle map[string]any
	require.NoError(t, json.Unmarshal(goodPlain, &bundle))
	withoutTable := func() []byte {
		c := map[string]any{}
		for k, v := range bundle {
			c[k] = v
		}
		rows := map[string]any{}
		for k, v := range bundle["rows"].(map[string]any) {
			if k != "shop.tickets" {
				rows[k] = v
			}
		}
		c["rows"] = rows
		b, err := json.Marshal(c)
		require.NoError(t, err)
		return b
	}()

	corrupt := []struct {
		name string
		body []byte
		// why, when set, is what the error may say instead of corrupt or
		// SHA-256: age cannot tell a damaged file key from another
		// recipient's.
		why string
	}{
		{"truncated at the last chunk boundary", good[:payload+chunk*((len(good)-payload-1)/chunk)], ""},
		{"truncated at the first chunk boundary", good[:payload+chunk], ""},
		{"truncated inside a chunk", good[:payload+chunk+1000], ""},
		{"truncated after the header", good[:payload], ""},
		{"truncated inside the header", good[:headerEnd/2], ""},
		{"a payload bit flipped", flip(good, payload+chunk+77), ""},
		{"a header MAC bit flipped", flip(good, headerEnd-10), ""},
		{"a file key bit flipped", flip(good, bytes.Index(good, []byte("\n-> X25519 "))+60), ""},
		{"a byte appended", append(bytes.Clone(good), 0), ""},
		{"whole age file of a bundle cut short", encrypt(goodPlain[:len(goodPlain)*2/3]), ""},
		{"whole age file of a bundle cut at a row", encrypt(goodPlain[:bytes.LastIndex(goodPlain, []byte("},{"))+1]), ""},
		{"whole age file of a bundle without a table", encrypt(withoutTable), ""},
		{"whole age file of a bundle with data after it", encrypt(append(bytes.Clone(goodPlain), []byte(`{"format":"lethe.bundle.v1"}`)...)), ""},
		{"another subject's part", otherPart, ""},
	}
	for _, c := range corrupt[:2] {
		require.Zero(t, (len(c.body)-payload)%chunk, "%s: not on a chunk boundary", c.name)
	}

	manifest := tableDump(t, s, "lethe.manifest")
	audit := tableDump(t, s, "lethe.audit_log")
	restoreFails := func(t *testing.T, why string, extra ...string) {
		t.Helper()
		dir := t.TempDir()
		out := filepath.Join(dir, "bundle.json")
		for _, args := range [][]string{{"--out", out}, nil} { // to a file, and to standard output
			r := lethe(t, append(append([]string{"restore", "--subject", subject, "--identity", s.idPath, "--config", s.cfgPath}, extra...), args...)...)
			line := requireOneLineError(t, r, 1)
			want := `corrupt|SHA-256`
			if why != "" {
				want += "|" + why
			}
			require.Regexp(t, want, line)
			require.Empty(t, r.stdout, "restore wrote part of a bundle to standard output")
			require.NoFileExists(t, out)
			entries, err := os.ReadDir(dir)
			require.NoError(t, err)
			require.Empty(t, entries, "restore left a file behind")
		}
		require.Equal(t, audit, tableDump(t, s, "lethe.audit_log"), "a failed restore was audited")
	}
	restoreWorks := func(t *testing.T) {
		t.Helper()
		out := filepath.Join(t.TempDir(), "bundle.json")
		r := lethe(t, "restore", "--subject", subject, "--identity", s.idPath, "--out", out, "--config", s.cfgPath)
		requireOK(t, r)
		got, err := os.ReadFile(out)
		require.NoError(t, err)
		require.Equal(t, string(goodPlain), string(got))
		checkBundle(t, got, subject, "gone", before, start)
		audit = tableDump(t, s, "lethe.audit_log") // one restore entry more
	}

	segment := tableDump(t, s, "lethe.segment")
	for _, c := range corrupt {
		t.Run(c.name, func(t *testing.T) {
			sum := sha256.Sum256(c.body)
			// The segment again, with the corrupt part in the subject's
			// place, no shorter than before. (versitygw checks a range at a
			// version against the newest version's length.)
			body := append(append(bytes.Clone(whole[:loc.Offset]), c.body...), whole[loc.Offset+loc.Length:]...)
			if len(body) < len(whole) {
				body = append(body, make([]byte, len(whole)-len(body))...)
			}
			put, err := root.PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String(s.bucket.Name), Key: aws.String(loc.Segment), Body: bytes.NewReader(body)})
			require.NoError(t, err)
			version := aws.ToString(put.VersionId)
			require.NotEmpty(t, version)

			// The manifest is untouched: the segment's newest version is
			// the corrupt one, and restore reads the one the manifest names.
			restoreWorks(t)
			// The manifest names it, with the old checksum.
			_, err = s.db.Pool.Exec(ctx, `UPDATE lethe.segment SET version_id = $2 WHERE name = $1`, loc.Segment, version)
			require.NoError(t, err)
			_, err = s.db.Pool.Exec(ctx, `UPDATE lethe.manifest SET part_length = $2 WHERE subject_hmac = $1`,
				s.hmacOf(subject), len(c.body))
			require.NoError(t, err)
			restoreFails(t, "")
			// The manifest names it with its own checksum.
			_, err = s.db.Pool.Exec(ctx, `UPDATE lethe.manifest SET part_sha256 = $2 WHERE subject_hmac = $1`, s.hmacOf(subject), hex.EncodeToString(sum[:]))
			require.NoError(t, err)
			restoreFails(t, c.why)

			_, err = s.db.Pool.Exec(ctx, `UPDATE lethe.segment SET version_id = $2 WHERE name = $1`, loc.Segment, loc.VersionID)
			require.NoError(t, err)
			_, err = s.db.Pool.Exec(ctx, `UPDATE lethe.manifest SET part_offset = $2, part_length = $3, part_sha256 = $4 WHERE subject_hmac = $1`,
				s.hmacOf(subject), loc.Offset, loc.Length, loc.SHA256)
			require.NoError(t, err)
			require.Equal(t, manifest, tableDump(t, s, "lethe.manifest"))
			require.Equal(t, segment, tableDump(t, s, "lethe.segment"))
		})
	}
	restoreWorks(t)
}
