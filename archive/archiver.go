package archive

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"filippo.io/age"
	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
)

// objectStore is what the worker needs of S3: putting objects, setting
// their locks, and reading back its own audit anchors. It has no way to
// list or delete, and reads nothing but the ledger: the worker's
// credentials cannot, and its code does not try.
type objectStore interface {
	PutObject(ctx context.Context, in *s3.PutObjectInput, optFns ...func(*s3.Options)) (*s3.PutObjectOutput, error)
	PutObjectLegalHold(ctx context.Context, in *s3.PutObjectLegalHoldInput, optFns ...func(*s3.Options)) (*s3.PutObjectLegalHoldOutput, error)
	GetObject(ctx context.Context, in *s3.GetObjectInput, optFns ...func(*s3.Options)) (*s3.GetObjectOutput, error)
}

var _ objectStore = (*s3.Client)(nil)

// Lock modes of archive.lock_mode.
const (
	LockGovernance = "governance"
	LockCompliance = "compliance"
	LockNone       = "none"
)

// Archiver writes segments to the bucket with the worker's credentials and
// sets their legal holds. It is safe for concurrent use.
type Archiver struct {
	bucket  string
	prefix  string
	masters []age.Recipient
	store   objectStore
	timeout time.Duration
	// ledger is where the audit anchors are: <prefix>ledger/ unless set.
	ledger string
	// noLegalHolds is set by ProbeLock when lock_mode is none and the
	// bucket has no Object Lock: then no put asks for a legal hold, and
	// SetLegalHold does nothing.
	noLegalHolds bool
}

// NewArchiver returns an Archiver writing to bucket under prefix, wrapping
// subject keys to the master recipients. client is usually NewClient with
// the worker's credentials.
func NewArchiver(client *s3.Client, bucket, prefix string, masters []age.Recipient) *Archiver {
	return &Archiver{bucket: bucket, prefix: prefix, masters: masters, store: client, timeout: 2 * time.Minute, ledger: prefix + "ledger/"}
}

// Prefix is what every object name of the archive starts with.
func (a *Archiver) Prefix() string { return a.prefix }

// NewSegment returns an empty segment whose keys are wrapped to the
// archive's master recipients.
func (a *Archiver) NewSegment() *Segment { return NewSegment(a.masters) }

// Lock is the Object Lock a put asks for.
type Lock struct {
	// Mode is LockGovernance, LockCompliance or LockNone.
	Mode string
	// RetainUntil is the retention's end; zero puts no date, and only the
	// bucket's default retention applies.
	RetainUntil time.Time
	// LegalHold puts the object under an S3 legal hold.
	LegalHold bool
}

// Stored describes an object version that the server confirmed.
type Stored struct {
	// Name is the object's name.
	Name string
	// VersionID is the version the put created.
	VersionID string
	// SHA256 is the hex SHA-256 of the body, as the server echoed it.
	SHA256 string
	// Size is the body's length in bytes.
	Size int64
}

// Put puts body under name, once: with If-None-Match, its SHA-256 and lock.
// It returns only once the server has accepted the object and echoed the
// same checksum with a version id; that is the verification, since the
// worker cannot read the object back.
func (a *Archiver) Put(ctx context.Context, name string, body []byte, lock Lock) (*Stored, error) {
	return a.put(ctx, name, body, lock, true)
}

// PutNewVersion puts body as a new version of name, which must be under
// LedgerPrefix: the one object lethe writes more than once is the ledger's
// head.json. It checks as Put does, without If-None-Match.
func (a *Archiver) PutNewVersion(ctx context.Context, name string, body []byte, lock Lock) (*Stored, error) {
	if !strings.HasPrefix(name, a.LedgerPrefix()) {
		return nil, fmt.Errorf("error putting %s: only the ledger's head is written more than once", name)
	}
	return a.put(ctx, name, body, lock, false)
}

func (a *Archiver) put(ctx context.Context, name string, body []byte, lock Lock, once bool) (*Stored, error) {
	sum := sha256Of(body)
	sum64 := base64.StdEncoding.EncodeToString(sum)
	in := &s3.PutObjectInput{
		Bucket:         aws.String(a.bucket),
		Key:            aws.String(name),
		Body:           bytes.NewReader(body),
		ContentLength:  aws.Int64(int64(len(body))),
		ContentType:    aws.String("application/octet-stream"),
		ChecksumSHA256: aws.String(sum64),
	}
	if once {
		in.IfNoneMatch = aws.String("*")
	}
	switch lock.Mode {
	case LockGovernance:
		in.ObjectLockMode = types.ObjectLockModeGovernance
	case LockCompliance:
		in.ObjectLockMode = types.ObjectLockModeCompliance
	}
	if in.ObjectLockMode != "" && !lock.RetainUntil.IsZero() {
		in.ObjectLockRetainUntilDate = aws.Time(lock.RetainUntil.UTC())
	} else {
		in.ObjectLockMode = ""
	}
	if lock.LegalHold && !a.noLegalHolds {
		in.ObjectLockLegalHoldStatus = types.ObjectLockLegalHoldStatusOn
	}
	ctx, cancel := context.WithTimeout(ctx, a.timeout)
	defer cancel()
	// The body's checksum is sent and checked by the server, so the
	// signature need not hash the payload a second time.
	out, err := a.store.PutObject(ctx, in, s3.WithAPIOptions(v4.SwapComputePayloadSHA256ForUnsignedPayloadMiddleware))
	if err != nil {
		return nil, fmt.Errorf("error putting %s: %w", name, Classify(err))
	}
	if out.ChecksumSHA256 == nil || *out.ChecksumSHA256 != sum64 {
		return nil, fmt.Errorf("error verifying %s: the server echoed checksum %s, lethe sent %s", name, aws.ToString(out.ChecksumSHA256), sum64)
	}
	if out.VersionId == nil || *out.VersionId == "" || *out.VersionId == "null" {
		return nil, fmt.Errorf("error verifying %s: the server returned no version id; turn on versioning and object lock for the bucket", name)
	}
	return &Stored{Name: name, VersionID: *out.VersionId, SHA256: hex.EncodeToString(sum), Size: int64(len(body))}, nil
}

// SetLegalHold switches the S3 Object Lock legal hold of one object version
// on or off.
//
// On a bucket without Object Lock (see ProbeLock) it does nothing and
// returns ErrNoObjectLock: nothing in such a bucket keeps a segment.
func (a *Archiver) SetLegalHold(ctx context.Context, name, versionID string, on bool) error {
	if a.noLegalHolds {
		return fmt.Errorf("error setting the legal hold of %s: %w", name, ErrNoObjectLock)
	}
	status := types.ObjectLockLegalHoldStatusOff
	if on {
		status = types.ObjectLockLegalHoldStatusOn
	}
	ctx, cancel := context.WithTimeout(ctx, a.timeout)
	defer cancel()
	_, err := a.store.PutObjectLegalHold(ctx, &s3.PutObjectLegalHoldInput{
		Bucket:    aws.String(a.bucket),
		Key:       aws.String(name),
		VersionId: aws.String(versionID),
		LegalHold: &types.ObjectLockLegalHold{Status: status},
	})
	if err != nil {
		return fmt.Errorf("error setting the legal hold of %s: %w", name, Classify(err))
	}
	return nil
}

// Probe checks that the bucket exists and accepts the worker's credentials
// without writing anything: it asks to lift the legal hold of an object
// that does not exist, which a bucket that lets the worker in answers with
// NoSuchKey.
func (a *Archiver) Probe(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	_, err := a.store.PutObjectLegalHold(ctx, &s3.PutObjectLegalHoldInput{
		Bucket:    aws.String(a.bucket),
		Key:       aws.String(a.prefix + "probe/no-such-object"),
		LegalHold: &types.ObjectLockLegalHold{Status: types.ObjectLockLegalHoldStatusOff},
	})
	if err = Classify(err); err != nil && !errors.Is(err, ErrNotFound) {
		return fmt.Errorf("error probing bucket %q: %w", a.bucket, err)
	}
	return nil
}

// ProbeLock checks that the bucket takes objects under Object Lock in mode:
// it puts an empty object under <prefix>probe/, retained for a minute, which
// the bucket's lifecycle rule removes. A bucket without Object Lock refuses
// it with ErrNoObjectLock.
//
// With mode LockNone it puts the probe without retention and lifts its
// (absent) legal hold: a bucket without Object Lock refuses that, and the
// Archiver then puts segments without legal holds (LegalHolds reports it).
func (a *Archiver) ProbeLock(ctx context.Context, mode string) error {
	var id [8]byte
	_, _ = rand.Read(id[:])
	name := a.prefix + "probe/" + time.Now().UTC().Format(time.DateOnly) + "/" + hex.EncodeToString(id[:])
	if mode != LockNone {
		_, err := a.Put(ctx, name, nil, Lock{Mode: mode, RetainUntil: time.Now().Add(time.Minute)})
		return err
	}
	stored, err := a.Put(ctx, name, nil, Lock{Mode: LockNone})
	if err != nil {
		return err
	}
	err = a.SetLegalHold(ctx, name, stored.VersionID, false)
	if errors.Is(err, ErrNoObjectLock) {
		a.noLegalHolds = true
		return nil
	}
	return err
}

// LedgerPrefix is where the audit anchors are: <prefix>ledger/, or what
// SetLedgerPrefix set.
func (a *Archiver) LedgerPrefix() string { return a.ledger }

// SetLedgerPrefix puts the anchors under p instead: the ledger belongs to
// the database's audit chain, not to an archive prefix, so lethe bench,
// whose segments go under a prefix of their own, anchors where the worker
// does.
func (a *Archiver) SetLedgerPrefix(p string) { a.ledger = p }

// maxLedgerObject bounds what ReadLedger reads: an anchor lists the
// subjects erased in an hour at most, a few megabytes.
const maxLedgerObject = 256 << 20

// ReadLedger gets the current version of name, which must be under
// LedgerPrefix: the only objects the worker reads. A missing object is
// ErrNotFound.
func (a *Archiver) ReadLedger(ctx context.Context, name string) ([]byte, error) {
	if !strings.HasPrefix(name, a.LedgerPrefix()) {
		return nil, fmt.Errorf("error reading %s: the worker reads only the ledger under %s", name, a.LedgerPrefix())
	}
	ctx, cancel := context.WithTimeout(ctx, a.timeout)
	defer cancel()
	out, err := a.store.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String(a.bucket), Key: aws.String(name)})
	if err != nil {
		return nil, fmt.Errorf("error reading %s: %w", name, Classify(err))
	}
	defer out.Body.Close()
	b, err := io.ReadAll(io.LimitReader(out.Body, maxLedgerObject+1))
	if err != nil {
		return nil, fmt.Errorf("error reading %s: %w", name, Classify(err))
	}
	if len(b) > maxLedgerObject {
		return nil, fmt.Errorf("error reading %s: larger than %d bytes", name, maxLedgerObject)
	}
	return b, nil
}

// LegalHolds says whether the bucket can put segments under a legal hold:
// false only after ProbeLock found a bucket without Object Lock.
func (a *Archiver) LegalHolds() bool { return !a.noLegalHolds }
