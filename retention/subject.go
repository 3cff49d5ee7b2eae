package retention

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"hash"
	"sync"
)

// Hasher computes subject HMACs: hex HMAC-SHA256(key_secret, table "/" key).
// The HMAC names a subject everywhere outside the hot tables (object names,
// the manifest, the audit log, holds and receipts) without revealing its key.
// It is safe for concurrent use.
type Hasher struct {
	table string
	pool  sync.Pool
}

// NewHasher returns a Hasher for subjects of table (as written in the
// config) under secret.
func NewHasher(secret, table string) *Hasher {
	key := []byte(secret)
	return &Hasher{table: table, pool: sync.Pool{New: func() any { return hmac.New(sha256.New, key) }}}
}

// HMAC returns the hex HMAC of the subject whose key, as text, is key.
func (h *Hasher) HMAC(key string) string {
	m := h.pool.Get().(hash.Hash)
	m.Reset()
	m.Write([]byte(h.table))
	m.Write([]byte{'/'})
	m.Write([]byte(key))
	sum := hex.EncodeToString(m.Sum(nil))
	h.pool.Put(m)
	return sum
}

// HMAC returns the HMAC that names the subject whose canonical key is key.
func (k *Kind) HMAC(key string) string { return k.hasher.HMAC(key) }
