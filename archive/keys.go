package archive

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"

	"filippo.io/age"
)

// Each archival of a subject gets an age X25519 identity of its own: its
// part is encrypted to that identity's recipient alone, and the identity,
// encrypted to the master recipients, is the subject's wrapped key. The
// wrapped key lives only in lethe's database; destroying it makes every copy
// of the part unreadable, in every version, replica and backup of the bucket.

// WrapKey encrypts the subject identity id to the master recipients.
func WrapKey(id *age.X25519Identity, masters []age.Recipient) ([]byte, error) {
	var buf bytes.Buffer
	w, err := age.Encrypt(&buf, masters...)
	if err != nil {
		return nil, fmt.Errorf("error wrapping a subject key: %w", err)
	}
	if _, err := io.WriteString(w, id.String()); err != nil {
		return nil, fmt.Errorf("error wrapping a subject key: %w", err)
	}
	if err := w.Close(); err != nil {
		return nil, fmt.Errorf("error wrapping a subject key: %w", err)
	}
	return buf.Bytes(), nil
}

// UnwrapKey opens a wrapped key with master identities. It returns
// ErrWrongIdentity when none of them opens it.
func UnwrapKey(wrapped []byte, masters []age.Identity) (*age.X25519Identity, error) {
	plain, err := Decrypt(wrapped, masters)
	if err != nil {
		return nil, err
	}
	id, err := age.ParseX25519Identity(strings.TrimSpace(string(plain)))
	if err != nil {
		return nil, fmt.Errorf("%w: the wrapped key does not hold an age identity", ErrCorrupt)
	}
	return id, nil
}

// MastersFingerprint names a set of master recipients, whatever their order:
// the hex SHA-256 of their sorted texts. lethe keys rewrap compares it with
// what each key is wrapped to.
func MastersFingerprint(recipients []string) string {
	sorted := slices.Clone(recipients)
	slices.Sort(sorted)
	sum := sha256.Sum256([]byte(strings.Join(slices.Compact(sorted), "\n")))
	return hex.EncodeToString(sum[:])
}

// ErrWrongIdentity is returned when none of the identities can decrypt a
// wrapped key or a part.
var ErrWrongIdentity = errors.New("none of the identities can decrypt this")

// ErrCorrupt is returned when a part or a wrapped key is truncated, altered,
// or not what the manifest recorded.
var ErrCorrupt = errors.New("archive data is corrupt")

// Decrypt decrypts a whole age ciphertext. It fails, returning nothing, if
// any part is missing or altered.
func Decrypt(ciphertext []byte, identities []age.Identity) ([]byte, error) {
	dr, err := age.Decrypt(bytes.NewReader(ciphertext), identities...)
	if err != nil {
		var noMatch *age.NoIdentityMatchError
		if errors.As(err, &noMatch) {
			return nil, fmt.Errorf("%w: it was encrypted to other recipients", ErrWrongIdentity)
		}
		return nil, fmt.Errorf("%w: %v", ErrCorrupt, err)
	}
	plaintext, err := io.ReadAll(dr)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrCorrupt, err)
	}
	return plaintext, nil
}
