package api_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/lethehq/lethe/internal/testenv"
)

// selfSigned writes a certificate for 127.0.0.1 and its key into dir and
// returns their paths and a pool that trusts the certificate.
func selfSigned(t *testing.T, dir string) (certPath, keyPath string, pool *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "lethe test"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		IPAddresses:  []net.IP{net.ParseIP("127.0.0.1")},
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	require.NoError(t, err)
	kb, err := x509.MarshalECPrivateKey(key)
	require.NoError(t, err)
	certPath, keyPath = filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	require.NoError(t, os.WriteFile(certPath, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600))
	require.NoError(t, os.WriteFile(keyPath, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), 0o600))
	cert, err := x509.ParseCertificate(der)
	require.NoError(t, err)
	pool = x509.NewCertPool()
	pool.AddCert(cert)
	return certPath, keyPath, pool
}

// TestAPIServeTLS serves the API as lethe serve does, without a worker,
// over TLS. A request it takes waits, received, for a worker; a hold's
// object-store lock waits as a pending sync; the database gauges of
// /metrics say both.
func TestAPIServeTLS(t *testing.T) {
	t.Parallel()
	certPath, keyPath, pool := selfSigned(t, t.TempDir())
	l := startLive(t, liveOptions{httpExtra: fmt.Sprintf("  tls_cert: %s\n  tls_key: %s\n", certPath, keyPath)})
	require.Eventually(t, func() bool { return strings.Contains(l.log.String(), "http server listening") }, 10*time.Second, 20*time.Millisecond)
	require.Contains(t, l.log.String(), "tls=true")

	plain := &http.Client{Timeout: 5 * time.Second}
	if resp, err := plain.Get("http://" + l.addr + "/healthz"); err == nil {
		resp.Body.Close()
		require.NotEqual(t, 200, resp.StatusCode, "plain HTTP is not served on a TLS port")
	}
	c := newAPIClient(t, "https://"+l.addr, &http.Client{Timeout: 30 * time.Second,
		Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}}})
	require.Equal(t, 200, c.call("GET", "/healthz", "", nil).status)
	require.Equal(t, 200, c.call("GET", "/readyz", "", nil).status)

	key := l.keys["due"][0]
	r := c.call("POST", "/api/v1/requests", "privacy", map[string]any{"subject": key, "ticket": "T-TLS", "by": "desk"})
	require.Equal(t, 201, r.status, "%s", r.body)
	var req struct {
		ID       int64  `json:"id"`
		State    string `json:"state"`
		DaysLeft int    `json:"days_left"`
	}
	r.json(t, &req)
	require.Equal(t, "received", req.State, "no worker: the request waits for one")
	require.Equal(t, 45, req.DaysLeft)
	r = c.call("POST", "/api/v1/holds", "legal", map[string]any{"matter": "M-TLS", "subjects": []string{l.keys["due"][1], "not-yet-a-customer"}, "reason": "r", "by": "counsel"})
	require.Equal(t, 201, r.status, "%s", r.body)

	families, body := c.metrics(t)
	gauge := func(name string, labels ...string) float64 {
		t.Helper()
		return testenv.MetricValue(t, families, name, labels...)
	}
	require.Equal(t, 1.0, gauge("lethe_requests", "state", "received"))
	require.Equal(t, 0.0, gauge("lethe_requests", "state", "completed"))
	require.InDelta(t, 45.0, gauge("lethe_open_request_min_days_left"), 0.01)
	require.InDelta(t, 0, gauge("lethe_oldest_open_request_age_seconds"), 60)
	require.Equal(t, 2.0, gauge("lethe_holds_active"))
	require.Equal(t, 2.0, gauge("lethe_held_subjects"))
	require.Equal(t, 2.0, gauge("lethe_hold_syncs_pending"), "no worker has synced the locks")
	require.Equal(t, 1.0, gauge("lethe_database_up"))
	require.NotContains(t, string(body), "not-yet-a-customer")

	var st map[string]json.RawMessage
	c.call("GET", "/api/v1/status?runs=1", "auditor", nil).json(t, &st)
	require.Contains(t, string(st["pending_hold_syncs"]), `"held": true`)
}
