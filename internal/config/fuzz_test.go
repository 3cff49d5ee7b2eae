package config_test

import (
	"bytes"
	"math/big"
	"regexp"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/lethehq/lethe/internal/config"
)

func FuzzLoad(f *testing.F) {
	f.Add([]byte(fullYAML))
	f.Add([]byte(fullYAML + "schedule: \"@every 1h\"\ntimezone: Asia/Kolkata\n"))
	f.Add([]byte(strings.Replace(fullYAML, "  path_style: true\n", "  path_style: ${PS}\n", 1)))
	f.Add([]byte("database:\n  url: x\n"))
	f.Add([]byte("a: &a [*a, *a]\nb: *a\n"))
	f.Add([]byte("policies: ${P}\n"))
	f.Add([]byte("---\n---\n"))
	f.Add([]byte("{\"archive\": {\"recipients\": [\"${}\"]}}"))
	f.Add([]byte("subject:\n  related:\n    - related:\n        - related: [{}]\n"))
	f.Add([]byte("<<: {database: {url: x}}\n"))
	f.Add([]byte{})

	lookup := lookupIn(map[string]string{
		"DB_URL":        env["DB_URL"],
		"WRITER_SECRET": env["WRITER_SECRET"],
		"PS":            "true",
		"P":             "[{name: x}]",
	})
	f.Fuzz(func(t *testing.T, data []byte) {
		// *_file keys read files: keep the fuzzer away from /dev/zero and
		// friends. Load of files is tested on its own.
		if bytes.Contains(data, []byte("_file")) {
			t.Skip()
		}
		cfg, err := config.Load(bytes.NewReader(data), lookup)
		if err != nil {
			require.Nil(t, cfg)
			require.True(t, config.IsConfigError(err), "every Load error is a config error: %v", err)
			return
		}
		// A config that loads is complete.
		require.NotEmpty(t, cfg.Policies)
		require.NotEmpty(t, cfg.Archive.Recipients)
		require.Len(t, cfg.Archive.ParsedRecipients, len(cfg.Archive.Recipients))
		require.NotEmpty(t, cfg.Database.URL)
		require.GreaterOrEqual(t, len(cfg.Archive.KeySecret), 16)
		require.NotNil(t, cfg.Location)
		require.NotNil(t, cfg.Cron)
		require.NotEmpty(t, cfg.Archive.Bucket)
		for _, p := range cfg.Policies {
			require.Positive(t, int(p.RetainDays))
			require.Contains(t, []string{config.ThenArchive, config.ThenDelete}, p.Then)
			require.NoError(t, config.CheckPredicate("where", p.Where))
		}
		_, err = config.ParseQualified(cfg.Subject.Table)
		require.NoError(t, err)
		_ = cfg.Redacted()
	})
}

var daysSyntax = regexp.MustCompile(`^([0-9]+)([dwy])$`)

func FuzzParseDays(f *testing.F) {
	for _, s := range []string{"730d", "12w", "7y", "0d", "100000d", "100001d", "273y", "274y", "14285w", "",
		"d", "-1d", "+1d", " 1d", "1D", "99999999999999999999d", "٣d", "00000000000000000000001y"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		d, err := config.ParseDays(s)

		// The oracle: exactly ^[0-9]+[dwy]$ with a value in 1..100000.
		want := int64(-1)
		if m := daysSyntax.FindStringSubmatch(s); m != nil {
			n, _ := new(big.Int).SetString(m[1], 10)
			per := map[string]int64{"d": 1, "w": 7, "y": 365}[m[2]]
			n.Mul(n, big.NewInt(per))
			if n.Sign() > 0 && n.Cmp(big.NewInt(100_000)) <= 0 {
				want = n.Int64()
			}
		}
		if err != nil {
			require.Zero(t, d)
			require.Equal(t, int64(-1), want, "ParseDays(%q) failed: %v", s, err)
			return
		}
		require.Equal(t, want, int64(d), "ParseDays(%q)", s)
		require.Greater(t, int(d), 0)
		require.LessOrEqual(t, int(d), 100_000)
		again, err := config.ParseDays(d.String())
		require.NoError(t, err)
		require.Equal(t, d, again)
	})
}

// outsideQuotes returns s with every quoted string and quoted identifier
// (as SQL reads them, ” and "" escaping a quote) replaced by a space, and
// whether every quote was closed.
func outsideQuotes(s string) (string, bool) {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c != '\'' && c != '"' {
			b.WriteByte(c)
			continue
		}
		j := i + 1
		for ; j < len(s); j++ {
			if s[j] == c {
				if j+1 < len(s) && s[j+1] == c {
					j++
					continue
				}
				break
			}
		}
		if j >= len(s) {
			return b.String(), false
		}
		b.WriteByte(' ')
		i = j
	}
	return b.String(), true
}

func FuzzCheckPredicate(f *testing.F) {
	for _, s := range []string{
		"status = 'closed'", "status = 'it''s'", "a; b", "'a;b'", "\"a;\" = 1", "a -- b", "'--'", "/* */",
		"a = $1", "a$1 = 1", "$$x$$", "E'\\''", "(a)", "((a)", "a)", "'", "\"", "x\x00", "a = 'b' ; --",
		"status = 'x'';' ; 'y'", "e'x'", "ee'x'", "(\"a\"\";\"\")",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		err := config.CheckPredicate("requests.protect", s)
		if err != nil {
			require.True(t, config.IsConfigError(err))
			require.ErrorContains(t, err, "config: requests.protect: ")
		}
		out, closed := outsideQuotes(s)
		if closed && strings.Contains(out, ";") {
			require.Error(t, err, "%q has ; outside quotes", s)
		}
		if err != nil {
			return
		}
		// What is accepted is one expression: no statement separator, no
		// comment, no NUL, no parameter, quotes closed, parentheses
		// balanced.
		require.True(t, closed, "%q leaves a quote open", s)
		require.NotContains(t, out, ";")
		require.NotContains(t, out, "--")
		require.NotContains(t, out, "/*")
		require.NotContains(t, s, "\x00")
		require.Equal(t, strings.Count(out, "("), strings.Count(out, ")"))
		depth := 0
		for i := 0; i < len(out); i++ {
			switch out[i] {
			case '(':
				depth++
			case ')':
				depth--
				require.GreaterOrEqual(t, depth, 0)
			case '$':
				t.Fatalf("%q has a $ outside quotes", s)
			}
		}
	})
}
