package testenv

import (
	"fmt"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/lethehq/lethe/internal/config"
)

// ConfigYAML returns a whole lethe config for db and bucket, encrypting to
// recipient, with fragment supplying the subject:, policies: and requests:
// sections. Credentials are written inline: test servers only.
func ConfigYAML(db *DB, b *Bucket, recipient, fragment string) string {
	s := b.Server
	return fmt.Sprintf(`database:
  url: %q
archive:
  endpoint: %s
  bucket: %s
  prefix: v1/
  path_style: true
  batch_size: 50
  credentials:
    access_key_id: %s
    secret_access_key: %s
  recipients:
    - %s
  key_secret: %s
restore:
  credentials:
    access_key_id: %s
    secret_access_key: %s
worker:
  concurrency: 2
http:
  listen: 127.0.0.1:0
%s`, db.URL, s.Endpoint, b.Name, s.Writer.AccessKeyID, s.Writer.SecretAccessKey, recipient, randomHex(16),
		s.Reader.AccessKeyID, s.Reader.SecretAccessKey, strings.TrimLeft(fragment, "\n"))
}

// Config is ConfigYAML, loaded and validated.
func Config(t testing.TB, db *DB, b *Bucket, recipient, fragment string) *config.Config {
	t.Helper()
	cfg, err := config.Load(strings.NewReader(ConfigYAML(db, b, recipient, fragment)), func(string) (string, bool) { return "", false })
	require.NoError(t, err)
	return cfg
}
