package archive

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"hash"
	"io"
	"time"

	"filippo.io/age"
)

// Segment is the object one batch puts: the concatenation of its subjects'
// parts, each a complete age file that only its subject's own key opens.
// Nothing else is in it, and no name or metadata says whose parts it holds.
type Segment struct {
	buf     bytes.Buffer
	sum     hash.Hash
	masters []age.Recipient
}

// Part is where one subject's part lies in its segment, and its key.
type Part struct {
	// Offset and Length are the part's bytes in the segment.
	Offset, Length int64
	// SHA256 is the hex SHA-256 of the part.
	SHA256 string
	// WrappedKey is the subject's identity, encrypted to the masters.
	WrappedKey []byte
}

// NewSegment returns an empty segment whose subject keys are wrapped to
// masters.
func NewSegment(masters []age.Recipient) *Segment {
	return &Segment{sum: sha256.New(), masters: masters}
}

// Add encrypts b, while encoding it, to a fresh identity of its own,
// appends it to the segment, and returns where it lies and the identity
// wrapped to the masters. The identity itself is forgotten.
func (s *Segment) Add(b *Bundle) (Part, error) {
	id, err := age.GenerateX25519Identity()
	if err != nil {
		return Part{}, fmt.Errorf("error making a subject key: %w", err)
	}
	wrapped, err := WrapKey(id, s.masters)
	if err != nil {
		return Part{}, err
	}
	start := s.buf.Len()
	partSum := sha256.New()
	w, err := age.Encrypt(io.MultiWriter(&s.buf, s.sum, partSum), id.Recipient())
	if err == nil {
		err = b.Encode(w)
	}
	if err == nil {
		err = w.Close()
	}
	if err != nil {
		return Part{}, fmt.Errorf("error encrypting a bundle: %w", err)
	}
	return Part{Offset: int64(start), Length: int64(s.buf.Len() - start),
		SHA256: hex.EncodeToString(partSum.Sum(nil)), WrappedKey: wrapped}, nil
}

// Bytes returns the segment's contents.
func (s *Segment) Bytes() []byte { return s.buf.Bytes() }

// Size is the segment's length in bytes.
func (s *Segment) Size() int64 { return int64(s.buf.Len()) }

// SHA256 is the hex SHA-256 of the segment.
func (s *Segment) SHA256() string { return hex.EncodeToString(s.sum.Sum(nil)) }

// SegmentName returns a new segment's object name under prefix:
// <prefix>segments/<YYYY-MM-DD>/<random>.seg. The random part is new for
// every call, so no name is ever written twice.
func SegmentName(prefix string, now time.Time) string {
	var id [16]byte
	_, _ = rand.Read(id[:])
	return prefix + "segments/" + now.UTC().Format(time.DateOnly) + "/" + hex.EncodeToString(id[:]) + ".seg"
}

func sha256Of(b []byte) []byte {
	s := sha256.Sum256(b)
	return s[:]
}
