package s3dev

import (
	"context"
	"errors"
	"fmt"
	"net/http"

	"github.com/aws/aws-sdk-go-v2/aws"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
)

// Region is the region the server and its clients use.
const Region = "us-east-1"

// Client returns an S3 client for the server signed with c: path-style
// addressing, the server's endpoint, up to 64 idle connections and the
// SDK's default retries.
func (s *Server) Client(c Credentials) *s3.Client {
	httpClient := awshttp.NewBuildableClient().WithTransportOptions(func(t *http.Transport) {
		t.MaxIdleConnsPerHost = 64
	})
	return s3.New(s3.Options{
		BaseEndpoint: aws.String(s.Endpoint),
		UsePathStyle: true,
		Region:       Region,
		Credentials:  credentials.NewStaticCredentialsProvider(c.AccessKeyID, c.SecretAccessKey, ""),
		HTTPClient:   httpClient,
	})
}

// CreateBucket is CreateBucketWithPrefix with DefaultPrefix.
func (s *Server) CreateBucket(ctx context.Context, name string) error {
	return s.CreateBucketWithPrefix(ctx, name, DefaultPrefix)
}

// EnsureBucket is EnsureBucketWithPrefix with DefaultPrefix.
func (s *Server) EnsureBucket(ctx context.Context, name string) (created bool, err error) {
	return s.EnsureBucketWithPrefix(ctx, name, DefaultPrefix)
}

// CreateBucketWithPrefix creates the bucket as root with object lock
// enabled, makes sure versioning is on and sets BucketPolicy for the writer
// and the reader, with prefix as the archive prefix (archive.prefix). It
// fails if the bucket exists or the prefix is refused by CheckPrefix.
func (s *Server) CreateBucketWithPrefix(ctx context.Context, name, prefix string) error {
	if err := CheckPrefix(prefix); err != nil {
		return err
	}
	client := s.Client(s.Root)
	if _, err := client.CreateBucket(ctx, &s3.CreateBucketInput{
		Bucket:                     aws.String(name),
		ObjectLockEnabledForBucket: aws.Bool(true),
	}); err != nil {
		return fmt.Errorf("error creating bucket %s: %w", name, err)
	}
	return s.provisionBucket(ctx, client, name, prefix)
}

// EnsureBucketWithPrefix is CreateBucketWithPrefix that accepts a bucket
// root already owns: it then checks object lock and sets versioning and the
// policy again, so the policy is the one for prefix afterwards. It reports
// whether it created the bucket.
func (s *Server) EnsureBucketWithPrefix(ctx context.Context, name, prefix string) (created bool, err error) {
	if err := CheckPrefix(prefix); err != nil {
		return false, err
	}
	client := s.Client(s.Root)
	_, err = client.CreateBucket(ctx, &s3.CreateBucketInput{
		Bucket:                     aws.String(name),
		ObjectLockEnabledForBucket: aws.Bool(true),
	})
	var owned *types.BucketAlreadyOwnedByYou
	switch {
	case err == nil:
		created = true
	case errors.As(err, &owned):
		out, err := client.GetObjectLockConfiguration(ctx, &s3.GetObjectLockConfigurationInput{Bucket: aws.String(name)})
		if err != nil {
			return false, fmt.Errorf("error checking object lock of bucket %s: %w", name, err)
		}
		if out.ObjectLockConfiguration == nil || out.ObjectLockConfiguration.ObjectLockEnabled != types.ObjectLockEnabledEnabled {
			return false, fmt.Errorf("error checking object lock of bucket %s: bucket exists without object lock", name)
		}
	default:
		return false, fmt.Errorf("error creating bucket %s: %w", name, err)
	}
	return created, s.provisionBucket(ctx, client, name, prefix)
}

func (s *Server) provisionBucket(ctx context.Context, client *s3.Client, name, prefix string) error {
	v, err := client.GetBucketVersioning(ctx, &s3.GetBucketVersioningInput{Bucket: aws.String(name)})
	if err != nil {
		return fmt.Errorf("error getting versioning of bucket %s: %w", name, err)
	}
	if v.Status != types.BucketVersioningStatusEnabled {
		if _, err := client.PutBucketVersioning(ctx, &s3.PutBucketVersioningInput{
			Bucket:                  aws.String(name),
			VersioningConfiguration: &types.VersioningConfiguration{Status: types.BucketVersioningStatusEnabled},
		}); err != nil {
			return fmt.Errorf("error enabling versioning of bucket %s: %w", name, err)
		}
	}
	if _, err := client.PutBucketPolicy(ctx, &s3.PutBucketPolicyInput{
		Bucket: aws.String(name),
		Policy: aws.String(BucketPolicy(name, prefix, s.Writer.AccessKeyID, s.Reader.AccessKeyID)),
	}); err != nil {
		return fmt.Errorf("error setting policy of bucket %s: %w", name, err)
	}
	return nil
}
