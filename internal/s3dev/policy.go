package s3dev

import (
	"encoding/json"
	"fmt"
	"strings"
)

// DefaultPrefix is the archive prefix (the config's archive.prefix) that the
// tests and the demo use, and that CreateBucket and EnsureBucket write into
// the bucket policy.
const DefaultPrefix = "v1/"

// ledgerDir is the folder, under the archive prefix, of the worker's audit
// anchors: the only objects the worker may read back.
const ledgerDir = "ledger/"

// Actions the bucket policy grants.
var (
	// writerObjectActions are the archive worker's rights on every object:
	// put a segment once (with If-None-Match, a checksum, an Object Lock
	// mode and retain-until date, and sometimes a legal hold), extend a
	// retention, and switch legal holds on and off. Never a delete, never a
	// list, never a read outside the ledger.
	writerObjectActions = []string{"s3:PutObject", "s3:PutObjectRetention", "s3:PutObjectLegalHold"}
	// writerLedgerActions are the archive worker's rights on the objects
	// under prefix + "ledger/": reading back its own audit anchors.
	writerLedgerActions = []string{"s3:GetObject"}
	// readerObjectActions are the restore account's rights on the objects:
	// get them, by version and by byte range too.
	readerObjectActions = []string{"s3:GetObject", "s3:GetObjectVersion"}
)

type policyDocument struct {
	Version   string            `json:"Version"`
	Statement []policyStatement `json:"Statement"`
}

type policyStatement struct {
	Sid       string              `json:"Sid"`
	Effect    string              `json:"Effect"`
	Principal map[string][]string `json:"Principal"`
	Action    []string            `json:"Action"`
	Resource  []string            `json:"Resource"`
}

// CheckPrefix reports whether prefix can go into a bucket policy as the
// archive prefix: it must not start with "/" (as archive.prefix must not),
// and it must not hold characters a policy would read as a wildcard or a
// variable ("*", "?", "$").
func CheckPrefix(prefix string) error {
	if strings.HasPrefix(prefix, "/") {
		return fmt.Errorf("invalid archive prefix %q: must not start with /", prefix)
	}
	if i := strings.IndexAny(prefix, "*?$"); i >= 0 {
		return fmt.Errorf("invalid archive prefix %q: %q would be a wildcard or a variable in the bucket policy", prefix, prefix[i])
	}
	return nil
}

// BucketPolicy returns the policy of an archive bucket whose objects are
// under prefix (the config's archive.prefix, such as DefaultPrefix). The
// writer (the archive worker) may put objects (with Object Lock retention
// and legal holds), extend retentions and set legal holds on every object,
// and get the objects under prefix + "ledger/"; it may not read anything
// else, list, or delete. The reader (restore) may get objects and their
// versions, byte ranges included, and nothing else. Principals are plain
// access key ids, as versitygw matches them. The prefix is not checked: see
// CheckPrefix.
func BucketPolicy(bucket, prefix, writerAccessKeyID, readerAccessKeyID string) string {
	objectsARN := "arn:aws:s3:::" + bucket + "/*"
	ledgerARN := "arn:aws:s3:::" + bucket + "/" + prefix + ledgerDir + "*"
	doc := policyDocument{
		Version: "2012-10-17",
		Statement: []policyStatement{
			{
				Sid:       "ArchiveWriterObjects",
				Effect:    "Allow",
				Principal: map[string][]string{"AWS": {writerAccessKeyID}},
				Action:    writerObjectActions,
				Resource:  []string{objectsARN},
			},
			{
				Sid:       "ArchiveWriterLedger",
				Effect:    "Allow",
				Principal: map[string][]string{"AWS": {writerAccessKeyID}},
				Action:    writerLedgerActions,
				Resource:  []string{ledgerARN},
			},
			{
				Sid:       "RestoreReaderObjects",
				Effect:    "Allow",
				Principal: map[string][]string{"AWS": {readerAccessKeyID}},
				Action:    readerObjectActions,
				Resource:  []string{objectsARN},
			},
		},
	}
	b, _ := json.MarshalIndent(doc, "", "  ") // strings and slices of strings always encode
	return string(b)
}
