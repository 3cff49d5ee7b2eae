package s3dev

import "encoding/json"

// Actions the bucket policy grants.
var (
	// writerObjectActions are the archive worker's rights on the objects:
	// write, hold, and remove versions for deletion requests and expiry.
	// Never a read.
	writerObjectActions = []string{"s3:PutObject", "s3:PutObjectLegalHold", "s3:DeleteObject", "s3:DeleteObjectVersion"}
	// writerBucketActions are the archive worker's rights on the bucket:
	// listing the versions of an object to remove them all.
	writerBucketActions = []string{"s3:ListBucketVersions"}
	// readerObjectActions are the restore account's rights on the objects.
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

// BucketPolicy returns the policy of an archive bucket. The writer (the
// archive worker) may put objects, set legal holds, list versions and
// delete objects and versions, but never read them. The reader (restore)
// may get objects and their versions, nothing else. Principals are plain
// access key ids, as versitygw matches them.
func BucketPolicy(bucket, writerAccessKeyID, readerAccessKeyID string) string {
	bucketARN := "arn:aws:s3:::" + bucket
	objectsARN := bucketARN + "/*"
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
				Sid:       "ArchiveWriterBucket",
				Effect:    "Allow",
				Principal: map[string][]string{"AWS": {writerAccessKeyID}},
				Action:    writerBucketActions,
				Resource:  []string{bucketARN},
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
