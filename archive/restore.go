package archive

import (
	"bytes"
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

// MaxObjectSize bounds what a restore reads: no bundle lethe writes comes
// near it.
const MaxObjectSize = 1 << 30

// reader is what a restore needs of S3.
type reader interface {
	GetObject(ctx context.Context, in *s3.GetObjectInput, optFns ...func(*s3.Options)) (*s3.GetObjectOutput, error)
}

var _ reader = (*s3.Client)(nil)

// Restorer fetches and decrypts archived subjects with the restore
// credentials and an identity.
type Restorer struct {
	bucket string
	prefix string
	store  reader
}

// NewRestorer returns a Restorer reading bucket under prefix. client is
// usually NewClient with the restore credentials.
func NewRestorer(client *s3.Client, bucket, prefix string) *Restorer {
	return &Restorer{bucket: bucket, prefix: prefix, store: client}
}

// Restored is a decrypted, checked bundle.
type Restored struct {
	// Plaintext is the bundle's JSON, exactly as archived.
	Plaintext []byte
	// Bundle is Plaintext, decoded.
	Bundle *Decoded
	// VersionID is the object version that was read.
	VersionID string
	// SHA256 is the hex SHA-256 of the ciphertext that was read.
	SHA256 string
}

// ErrWrongIdentity is returned when none of the identities can decrypt the
// object.
var ErrWrongIdentity = errors.New("none of the identities can decrypt this object")

// ErrCorrupt is returned when the object is truncated, altered, or not what
// the manifest recorded.
var ErrCorrupt = errors.New("archive object is corrupt")

// Restore reads the subject's object (versionID, or the latest when empty),
// checks it against wantSHA256 when that is not empty, decrypts it with
// identities, and checks that it is a whole bundle of subjectKey holding
// exactly tables. Nothing is returned unless all of that holds: a partial
// bundle is never presented as whole.
func (r *Restorer) Restore(ctx context.Context, subjectHMAC, subjectKey, versionID, wantSHA256 string, tables []string, identities []age.Identity) (*Restored, error) {
	in := &s3.GetObjectInput{Bucket: aws.String(r.bucket), Key: aws.String(ObjectKey(r.prefix, subjectHMAC))}
	if versionID != "" {
		in.VersionId = aws.String(versionID)
	}
	out, err := r.store.GetObject(ctx, in)
	if err != nil {
		return nil, fmt.Errorf("error getting object: %w", Classify(err))
	}
	defer out.Body.Close()
	ciphertext, err := io.ReadAll(io.LimitReader(out.Body, MaxObjectSize+1))
	if err != nil {
		return nil, fmt.Errorf("error reading object: %w", Classify(err))
	}
	if len(ciphertext) > MaxObjectSize {
		return nil, fmt.Errorf("%w: larger than %d bytes", ErrCorrupt, MaxObjectSize)
	}
	if out.ContentLength != nil && *out.ContentLength != int64(len(ciphertext)) {
		return nil, fmt.Errorf("%w: read %d bytes of %d", ErrCorrupt, len(ciphertext), *out.ContentLength)
	}
	sum := sha256.Sum256(ciphertext)
	got := hex.EncodeToString(sum[:])
	if wantSHA256 != "" && got != wantSHA256 {
		return nil, fmt.Errorf("%w: its SHA-256 is %s, the manifest recorded %s", ErrCorrupt, got, wantSHA256)
	}
	plaintext, err := Decrypt(ciphertext, identities)
	if err != nil {
		return nil, err
	}
	b, err := Decode(plaintext, tables)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrCorrupt, err)
	}
	if b.Subject != subjectKey {
		return nil, fmt.Errorf("%w: it holds another subject than the one asked for", ErrCorrupt)
	}
	return &Restored{Plaintext: plaintext, Bundle: b, VersionID: aws.ToString(out.VersionId), SHA256: got}, nil
}

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
