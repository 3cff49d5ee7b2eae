package retention_test

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/lethehq/lethe"
	"github.com/lethehq/lethe/internal/config"
	"github.com/lethehq/lethe/internal/lethetest"
	"github.com/lethehq/lethe/internal/testenv"
	"github.com/lethehq/lethe/retention"
)

func TestEverySpellingOfAKeyIsOneSubject(t *testing.T) {
	lethetest.EachKeyCase(t, func(t *testing.T, kc lethetest.KeyCase, p *lethetest.Env) {
		ctx := context.Background()
		all := append([]string{kc.Stored, kc.Canonical}, kc.Spellings...)

		got, err := p.Kind.CanonicalKeys(ctx, p.DB.Pool, all)
		require.NoError(t, err)
		for i, k := range got {
			require.Equal(t, kc.Canonical, k, "spelling %q", all[i])
		}
		others, err := p.Kind.CanonicalKeys(ctx, p.DB.Pool, kc.Others)
		require.NoError(t, err)
		for i, k := range others {
			require.NotEqual(t, kc.Canonical, k, "%q is another subject", kc.Others[i])
		}
		for _, bad := range append([]string{"", "   ", "\t\n", "a\x00b", "\xff\xfe"}, kc.Invalid...) {
			_, err := p.Kind.CanonicalKey(ctx, p.DB.Pool, bad)
			require.ErrorIs(t, err, lethe.ErrBadInput, "%q is not a %s key", bad, kc.Type)
			if strings.TrimSpace(bad) != "" {
				require.NotContains(t, err.Error(), bad, "the error must not repeat what was typed")
			}
		}
		// With many keys, the error names the one at fault.
		many := append(append([]string{}, all...), "x\x00")
		_, err = p.Kind.CanonicalKeys(ctx, p.DB.Pool, many)
		require.ErrorContains(t, err, fmt.Sprintf("number %d of %d", len(many), len(many)))
		if len(kc.Invalid) > 0 {
			many = append(append([]string{}, all...), kc.Invalid[0], kc.Stored)
			_, err = p.Kind.CanonicalKeys(ctx, p.DB.Pool, many)
			require.ErrorContains(t, err, fmt.Sprintf("number %d of %d", len(all)+1, len(many)))
		}
	})
}

func TestCompileRefusesKeysWithoutOneTextForm(t *testing.T) {
	t.Parallel()
	for _, typ := range []string{"double precision", "real", "timestamptz", "citext_like"} {
		t.Run(typ, func(t *testing.T) {
			t.Parallel()
			col := typ
			prep := ""
			if typ == "citext_like" {
				// A nondeterministic collation makes different text equal.
				prep = `CREATE COLLATION k.ci (provider = icu, locale = 'und-u-ks-level2', deterministic = false);`
				col = "text COLLATE k.ci"
			}
			ctx := context.Background()
			db := testenv.NewDB(t)
			_, err := db.Pool.Exec(ctx, fmt.Sprintf(`CREATE SCHEMA k; %s CREATE TABLE k.subjects (id %s PRIMARY KEY, closed_at timestamptz);`, prep, col))
			require.NoError(t, err)
			fragment := `
subject:
  table: k.subjects
  key: id
policies:
  - name: p
    clock: closed_at
    retain: 1d
`
			cfg := testenv.Config(t, db, testenv.NewBucket(t), testenv.NewIdentity(t).Recipient().String(), fragment)
			_, err = retention.Compile(ctx, db.Pool, cfg)
			require.Error(t, err)
			require.True(t, config.IsConfigError(err), "want a config error, got %v", err)
			require.ErrorContains(t, err, "subject.key:")
		})
	}
}

// PostgreSQL's HMAC (built from sha256) must equal Go's for every key, or
// suppression and the held counts would miss subjects.
func TestSQLHMACEqualsGo(t *testing.T) {
	t.Parallel()

	ctx := context.Background()
	db := testenv.NewDB(t)
	for _, secret := range []string{"0123456789abcdef", strings.Repeat("long secret ", 10)} {
		hasher := retention.NewHasher(secret, "crm.customers")
		expr, params := retention.HMACSQL(secret, "crm.customers", "$1::text", 2)
		for _, key := range []string{"1", "O'Brien \"x\"", "Zoë 🎉", "", strings.Repeat("k", 500)} {
			var got string
			args := append([]any{key}, params...)
			require.NoError(t, db.Pool.QueryRow(ctx, "SELECT "+expr, args...).Scan(&got))
			require.Equal(t, hasher.HMAC(key), got, "key %q", key)
		}
	}
}
