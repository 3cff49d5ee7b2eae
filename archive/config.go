package archive

import "github.com/lethehq/lethe/internal/config"

// FromConfig returns the Archiver of cfg's archive with the worker's
// credentials, keeping maxConns connections to the server. It does not
// contact the server; Probe does.
func FromConfig(cfg *config.Config, maxConns int) *Archiver {
	ac := cfg.Archive
	client := NewClient(ClientConfig{
		Endpoint: ac.Endpoint, Region: ac.Region, PathStyle: ac.PathStyle,
		AccessKeyID: ac.Credentials.AccessKeyID, SecretAccessKey: ac.Credentials.SecretAccessKey,
		MaxConns: maxConns,
	})
	a := NewArchiver(client, ac.Bucket, ac.Prefix, ac.ParsedRecipients)
	if ac.LedgerPrefix != "" {
		a.SetLedgerPrefix(ac.LedgerPrefix)
	}
	return a
}

// RestorerFromConfig returns the Restorer of cfg's archive with the
// reader's credentials (restore.credentials).
func RestorerFromConfig(cfg *config.Config) *Restorer {
	ac, rc := cfg.Archive, cfg.Restore.Credentials
	client := NewClient(ClientConfig{Endpoint: ac.Endpoint, Region: ac.Region, PathStyle: ac.PathStyle,
		AccessKeyID: rc.AccessKeyID, SecretAccessKey: rc.SecretAccessKey})
	return NewRestorer(client, ac.Bucket)
}
