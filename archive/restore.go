package archive

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"

	"filippo.io/age"
	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
)

// MaxPartSize bounds what a restore reads: no part lethe writes comes near
// it.
const MaxPartSize = 1 << 30

// reader is what a restore needs of S3.
type reader interface {
	GetObject(ctx context.Context, in *s3.GetObjectInput, optFns ...func(*s3.Options)) (*s3.GetObjectOutput, error)
}

var _ reader = (*s3.Client)(nil)

// Restorer reads subjects' parts with the restore credentials and opens
// them with a master identity.
type Restorer struct {
	bucket string
	store  reader
}

// NewRestorer returns a Restorer reading bucket. client is usually
// NewClient with the restore credentials.
func NewRestorer(client *s3.Client, bucket string) *Restorer {
	return &Restorer{bucket: bucket, store: client}
}

// Location is where a subject's part lies, and its wrapped key: a manifest
// entry.
type Location struct {
	// Segment and VersionID name the object version.
	Segment, VersionID string
	// Offset and Length are the part's bytes in it.
	Offset, Length int64
	// SHA256 is the hex SHA-256 of the part.
	SHA256 string
	// WrappedKey is the subject's identity, encrypted to the masters.
	WrappedKey []byte
}

// Restored is a decrypted, checked bundle.
type Restored struct {
	// Plaintext is the bundle's JSON, exactly as archived.
	Plaintext []byte
	// Bundle is Plaintext, decoded.
	Bundle *Decoded
}

// ReadPart gets loc's part with a ranged GET of its segment version and
// checks its SHA-256.
func (r *Restorer) ReadPart(ctx context.Context, loc Location) ([]byte, error) {
	if loc.Length <= 0 || loc.Length > MaxPartSize {
		return nil, fmt.Errorf("%w: a part of %d bytes", ErrCorrupt, loc.Length)
	}
	out, err := r.store.GetObject(ctx, &s3.GetObjectInput{
		Bucket:    aws.String(r.bucket),
		Key:       aws.String(loc.Segment),
		VersionId: aws.String(loc.VersionID),
		Range:     aws.String(fmt.Sprintf("bytes=%d-%d", loc.Offset, loc.Offset+loc.Length-1)),
	})
	if err != nil {
		return nil, fmt.Errorf("error getting the part from %s: %w", loc.Segment, Classify(err))
	}
	defer out.Body.Close()
	part, err := io.ReadAll(io.LimitReader(out.Body, loc.Length+1))
	if err != nil {
		return nil, fmt.Errorf("error reading the part from %s: %w", loc.Segment, Classify(err))
	}
	if int64(len(part)) != loc.Length {
		return nil, fmt.Errorf("%w: read %d bytes of a %d-byte part", ErrCorrupt, len(part), loc.Length)
	}
	sum := sha256.Sum256(part)
	if got := hex.EncodeToString(sum[:]); got != loc.SHA256 {
		return nil, fmt.Errorf("%w: the part's SHA-256 is %s, the manifest recorded %s", ErrCorrupt, got, loc.SHA256)
	}
	return part, nil
}

// Restore reads loc's part, opens its wrapped key with masters, decrypts the
// part and checks that it is a whole bundle of subjectKey holding exactly
// tables. Nothing is returned unless all of that holds: a partial bundle is
// never presented as whole.
func (r *Restorer) Restore(ctx context.Context, loc Location, subjectKey string, tables []string, masters []age.Identity) (*Restored, error) {
	part, err := r.ReadPart(ctx, loc)
	if err != nil {
		return nil, err
	}
	res, err := Open(part, loc.WrappedKey, tables, masters)
	if err != nil {
		return nil, err
	}
	if res.Bundle.Subject != subjectKey {
		return nil, fmt.Errorf("%w: it holds another subject than the one asked for", ErrCorrupt)
	}
	return res, nil
}

// Open opens a part read from the bucket with its wrapped key and checks
// that it is a whole bundle holding exactly tables. Whose bundle it is, the
// caller checks.
func Open(part, wrappedKey []byte, tables []string, masters []age.Identity) (*Restored, error) {
	id, err := UnwrapKey(wrappedKey, masters)
	if err != nil {
		return nil, err
	}
	return OpenPart(part, id, tables)
}

// OpenPart decrypts a part with its subject's own identity and checks that
// it is a whole bundle holding exactly tables.
func OpenPart(part []byte, id *age.X25519Identity, tables []string) (*Restored, error) {
	plaintext, err := Decrypt(part, []age.Identity{id})
	if errors.Is(err, ErrWrongIdentity) {
		return nil, fmt.Errorf("%w: the part is not encrypted to this subject's key", ErrCorrupt)
	}
	if err != nil {
		return nil, err
	}
	b, err := Decode(plaintext, tables)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrCorrupt, err)
	}
	return &Restored{Plaintext: plaintext, Bundle: b}, nil
}
