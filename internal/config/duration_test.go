package config_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.yaml.in/yaml/v3"

	"github.com/lethehq/lethe/internal/config"
)

func TestParseDays(t *testing.T) {
	t.Parallel()

	for _, tc := range []struct {
		in   string
		want config.Days
		err  string
	}{
		{in: "1d", want: 1},
		{in: "730d", want: 730},
		{in: "0730d", want: 730},
		{in: "1w", want: 7},
		{in: "12w", want: 84},
		{in: "1y", want: 365},
		{in: "7y", want: 2555},
		{in: "100000d", want: 100_000},
		{in: "14285w", want: 99_995},
		{in: "273y", want: 99_645},
		{in: "", err: "empty duration"},
		{in: "0d", err: "greater than zero"},
		{in: "0y", err: "greater than zero"},
		{in: "000w", err: "greater than zero"},
		{in: "100001d", err: "too long"},
		{in: "14286w", err: "too long"},
		{in: "274y", err: "too long"},
		{in: "99999999999999999999999d", err: "too long"},
		{in: "9223372036854775807y", err: "too long"},
		{in: "730", err: "no unit"},
		{in: "7m", err: "no unit"},
		{in: "7D", err: "no unit"},
		{in: "7 d", err: "whole number"},
		{in: "7dd", err: "whole number"},
		{in: "1y2d", err: "whole number"},
		{in: "d", err: "no number"},
		{in: "y", err: "no number"},
		{in: "-1d", err: "whole number"},
		{in: "+1d", err: "whole number"},
		{in: "1.5y", err: "whole number"},
		{in: " 7d", err: "whole number"},
		{in: "7d ", err: "no unit"},
		{in: "٣d", err: "whole number"}, // an Arabic-Indic digit
		{in: "0x10d", err: "whole number"},
	} {
		t.Run(tc.in, func(t *testing.T) {
			t.Parallel()
			got, err := config.ParseDays(tc.in)
			if tc.err != "" {
				require.ErrorContains(t, err, tc.err)
				require.Zero(t, got)
				return
			}
			require.NoError(t, err)
			require.Equal(t, tc.want, got)
		})
	}
}

func TestDaysStringDurationAndText(t *testing.T) {
	t.Parallel()

	d := config.Days(84)
	require.Equal(t, "84d", d.String())
	require.Equal(t, 84*24*time.Hour, d.Duration())
	b, err := d.MarshalText()
	require.NoError(t, err)
	require.Equal(t, "84d", string(b))

	var v struct {
		Keep config.Days `yaml:"keep"`
	}
	require.NoError(t, yaml.Unmarshal([]byte("keep: 2y\n"), &v))
	require.Equal(t, config.Days(730), v.Keep)
	require.Error(t, yaml.Unmarshal([]byte("keep: 2 years\n"), &v))
	out, err := yaml.Marshal(v)
	require.NoError(t, err)
	require.Equal(t, "keep: 730d\n", string(out))

	var u config.Days
	require.Error(t, u.UnmarshalText([]byte("0d")))
	require.Zero(t, u, "a failed parse leaves the value alone")
}
