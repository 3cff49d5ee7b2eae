package archive

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"slices"
	"sync"
	"time"

	"filippo.io/age"
	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
)

// objectStore is what the worker needs of S3. It has no way to read an
// object: the worker's credentials cannot, and its code does not try.
type objectStore interface {
	PutObject(ctx context.Context, in *s3.PutObjectInput, optFns ...func(*s3.Options)) (*s3.PutObjectOutput, error)
	ListObjectVersions(ctx context.Context, in *s3.ListObjectVersionsInput, optFns ...func(*s3.Options)) (*s3.ListObjectVersionsOutput, error)
	DeleteObject(ctx context.Context, in *s3.DeleteObjectInput, optFns ...func(*s3.Options)) (*s3.DeleteObjectOutput, error)
	PutObjectLegalHold(ctx context.Context, in *s3.PutObjectLegalHoldInput, optFns ...func(*s3.Options)) (*s3.PutObjectLegalHoldOutput, error)
}

var _ objectStore = (*s3.Client)(nil)

// Archiver encrypts bundles and writes them to the bucket with the worker's
// credentials. It is safe for concurrent use.
type Archiver struct {
	bucket     string
	prefix     string
	recipients []age.Recipient
	store      objectStore
	timeout    time.Duration
	bufs       sync.Pool
}

// NewArchiver returns an Archiver writing to bucket under prefix, encrypting
// to every recipient. client is usually NewClient with the worker's
// credentials.
func NewArchiver(client *s3.Client, bucket, prefix string, recipients []age.Recipient) *Archiver {
	return &Archiver{
		bucket:     bucket,
		prefix:     prefix,
		recipients: recipients,
		store:      client,
		timeout:    2 * time.Minute,
		bufs:       sync.Pool{New: func() any { return new(bytes.Buffer) }},
	}
}

// Stored describes an object version that the server confirmed.
type Stored struct {
	// Key is the object's name.
	Key string
	// VersionID is the version the put created.
	VersionID string
	// SHA256 is the hex SHA-256 of the ciphertext, as the server echoed it.
	SHA256 string
	// Size is the ciphertext's length in bytes.
	Size int64
}

// ObjectKey returns the object name of the subject whose HMAC is subjectHMAC.
func (a *Archiver) ObjectKey(subjectHMAC string) string {
	return ObjectKey(a.prefix, subjectHMAC)
}

// ObjectKey returns prefix + subjectHMAC + ".age": the object name of a
// subject. It holds no personal data.
func ObjectKey(prefix, subjectHMAC string) string {
	return prefix + subjectHMAC + ".age"
}

// Put encrypts b to every recipient and puts it as the subject's object,
// sending the ciphertext's SHA-256. It returns only once the server has
// accepted the object and echoed the same checksum; that is the verification,
// since the worker cannot read the object back. legalHold puts the new
// version under an S3 Object Lock legal hold.
func (a *Archiver) Put(ctx context.Context, subjectHMAC string, b *Bundle, legalHold bool) (*Stored, error) {
	buf := a.bufs.Get().(*bytes.Buffer)
	buf.Reset()
	defer a.bufs.Put(buf)

	h := sha256.New()
	enc, err := age.Encrypt(io.MultiWriter(buf, h), a.recipients...)
	if err != nil {
		return nil, fmt.Errorf("error encrypting bundle: %w", err)
	}
	if err := b.Encode(enc); err != nil {
		return nil, fmt.Errorf("error encrypting bundle: %w", err)
	}
	if err := enc.Close(); err != nil {
		return nil, fmt.Errorf("error encrypting bundle: %w", err)
	}
	return a.put(ctx, a.ObjectKey(subjectHMAC), buf.Bytes(), h.Sum(nil), legalHold)
}

// PutVerified puts body under prefix + name, without encryption, the way
// Put puts a bundle: with its SHA-256, checking the server's echo and
// version id.
func (a *Archiver) PutVerified(ctx context.Context, name string, body []byte) (*Stored, error) {
	sum := sha256.Sum256(body)
	return a.put(ctx, a.prefix+name, body, sum[:], false)
}

// put puts body under key with its SHA-256 sum and checks the echo.
func (a *Archiver) put(ctx context.Context, key string, body, sum []byte, legalHold bool) (*Stored, error) {
	sum64 := base64.StdEncoding.EncodeToString(sum)
	in := &s3.PutObjectInput{
		Bucket:         aws.String(a.bucket),
		Key:            aws.String(key),
		Body:           bytes.NewReader(body),
		ContentLength:  aws.Int64(int64(len(body))),
		ContentType:    aws.String("application/octet-stream"),
		ChecksumSHA256: aws.String(sum64),
	}
	if legalHold {
		in.ObjectLockLegalHoldStatus = types.ObjectLockLegalHoldStatusOn
	}
	ctx, cancel := context.WithTimeout(ctx, a.timeout)
	defer cancel()
	// The body's checksum is sent and checked by the server, so the
	// signature need not hash the payload a second time.
	out, err := a.store.PutObject(ctx, in, s3.WithAPIOptions(v4.SwapComputePayloadSHA256ForUnsignedPayloadMiddleware))
	if err != nil {
		return nil, fmt.Errorf("error putting object: %w", Classify(err))
	}
	if out.ChecksumSHA256 == nil || *out.ChecksumSHA256 != sum64 {
		got := "none"
		if out.ChecksumSHA256 != nil {
			got = *out.ChecksumSHA256
		}
		return nil, fmt.Errorf("error verifying object: the server echoed checksum %s, lethe sent %s", got, sum64)
	}
	if out.VersionId == nil || *out.VersionId == "" || *out.VersionId == "null" {
		return nil, errors.New("error verifying object: the server returned no version id; turn on versioning and object lock for the bucket")
	}
	return &Stored{Key: key, VersionID: *out.VersionId, SHA256: hex.EncodeToString(sum), Size: int64(len(body))}, nil
}

// Version is one version (or delete marker) of an object.
type Version struct {
	ID           string
	DeleteMarker bool
}

// Versions lists every version and delete marker of the subject's object.
func (a *Archiver) Versions(ctx context.Context, subjectHMAC string) ([]Version, error) {
	key := a.ObjectKey(subjectHMAC)
	ctx, cancel := context.WithTimeout(ctx, a.timeout)
	defer cancel()
	var vs []Version
	in := &s3.ListObjectVersionsInput{Bucket: aws.String(a.bucket), Prefix: aws.String(key)}
	for {
		out, err := a.store.ListObjectVersions(ctx, in)
		if err != nil {
			return nil, fmt.Errorf("error listing object versions: %w", Classify(err))
		}
		for _, v := range out.Versions {
			if aws.ToString(v.Key) == key {
				vs = append(vs, Version{ID: aws.ToString(v.VersionId)})
			}
		}
		for _, m := range out.DeleteMarkers {
			if aws.ToString(m.Key) == key {
				vs = append(vs, Version{ID: aws.ToString(m.VersionId), DeleteMarker: true})
			}
		}
		if !aws.ToBool(out.IsTruncated) {
			return vs, nil
		}
		in.KeyMarker, in.VersionIdMarker = out.NextKeyMarker, out.NextVersionIdMarker
	}
}

// Prune deletes every version and delete marker of the subject's object
// except keep. With keep empty it deletes them all. If keep is not among
// the versions, it deletes nothing and fails: the manifest and the bucket
// disagree, which needs a person. It returns the ids of
// the versions it deleted. Deleting what is already gone is not an error.
func (a *Archiver) Prune(ctx context.Context, subjectHMAC, keep string) ([]string, error) {
	vs, err := a.Versions(ctx, subjectHMAC)
	if err != nil {
		return nil, err
	}
	if keep != "" && !slices.ContainsFunc(vs, func(v Version) bool { return v.ID == keep && !v.DeleteMarker }) {
		return nil, fmt.Errorf("error pruning object versions: the version to keep, %s, is not in the bucket; nothing was deleted", keep)
	}
	key := a.ObjectKey(subjectHMAC)
	var deleted []string
	for _, v := range vs {
		if v.ID == keep {
			continue
		}
		if err := a.deleteVersion(ctx, key, v.ID); err != nil {
			return deleted, err
		}
		deleted = append(deleted, v.ID)
	}
	return deleted, nil
}

// DeleteVersions deletes the given versions of the subject's object, one
// after the other (some servers mishandle concurrent deletes of one key),
// and returns their ids. Deleting what is already gone is not an error.
func (a *Archiver) DeleteVersions(ctx context.Context, subjectHMAC string, vs []Version) ([]string, error) {
	key := a.ObjectKey(subjectHMAC)
	deleted := make([]string, 0, len(vs))
	for _, v := range vs {
		if err := a.deleteVersion(ctx, key, v.ID); err != nil {
			return deleted, err
		}
		deleted = append(deleted, v.ID)
	}
	return deleted, nil
}

func (a *Archiver) deleteVersion(ctx context.Context, key, versionID string) error {
	ctx, cancel := context.WithTimeout(ctx, a.timeout)
	defer cancel()
	_, err := a.store.DeleteObject(ctx, &s3.DeleteObjectInput{
		Bucket:    aws.String(a.bucket),
		Key:       aws.String(key),
		VersionId: aws.String(versionID),
	})
	if err = Classify(err); err != nil && !errors.Is(err, ErrNotFound) {
		return fmt.Errorf("error deleting object version: %w", err)
	}
	return nil
}

// SetLegalHold switches the S3 Object Lock legal hold on or off for every
// version of the subject's object. It returns how many versions it changed.
func (a *Archiver) SetLegalHold(ctx context.Context, subjectHMAC string, on bool) (int, error) {
	vs, err := a.Versions(ctx, subjectHMAC)
	if err != nil {
		return 0, err
	}
	status := types.ObjectLockLegalHoldStatusOff
	if on {
		status = types.ObjectLockLegalHoldStatusOn
	}
	key := a.ObjectKey(subjectHMAC)
	n := 0
	for _, v := range vs {
		if v.DeleteMarker {
			continue
		}
		cctx, cancel := context.WithTimeout(ctx, a.timeout)
		_, err := a.store.PutObjectLegalHold(cctx, &s3.PutObjectLegalHoldInput{
			Bucket:    aws.String(a.bucket),
			Key:       aws.String(key),
			VersionId: aws.String(v.ID),
			LegalHold: &types.ObjectLockLegalHold{Status: status},
		})
		cancel()
		if err != nil {
			return n, fmt.Errorf("error setting legal hold: %w", Classify(err))
		}
		n++
	}
	return n, nil
}

// Probe checks that the bucket exists and accepts the worker's credentials,
// without writing or reading any object.
func (a *Archiver) Probe(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	_, err := a.store.ListObjectVersions(ctx, &s3.ListObjectVersionsInput{
		Bucket:  aws.String(a.bucket),
		Prefix:  aws.String(a.prefix + "lethe-probe/"),
		MaxKeys: aws.Int32(1),
	})
	if err != nil {
		return fmt.Errorf("error probing bucket %q: %w", a.bucket, Classify(err))
	}
	return nil
}
