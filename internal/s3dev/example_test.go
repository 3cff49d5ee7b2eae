package s3dev_test

import (
	"bytes"
	"context"
	"fmt"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/lethehq/lethe/internal/s3dev"
)

// A test starts its own server, creates an archive bucket and uses one
// client per account.
func Example() {
	ctx := context.Background()
	srv, err := s3dev.Start(ctx, s3dev.Options{})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer srv.Stop()

	if err := srv.CreateBucket(ctx, "archive"); err != nil {
		fmt.Println(err)
		return
	}

	// The archive worker writes; a seekable body works over plain http.
	put, err := srv.Client(srv.Writer).PutObject(ctx, &s3.PutObjectInput{
		Bucket: aws.String("archive"),
		Key:    aws.String("tenant-1/batch-1.age"),
		Body:   bytes.NewReader([]byte("ciphertext")),
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println("version id returned:", aws.ToString(put.VersionId) != "")

	// It cannot read back what it wrote; only the restore account can.
	_, err = srv.Client(srv.Writer).GetObject(ctx, &s3.GetObjectInput{
		Bucket: aws.String("archive"),
		Key:    aws.String("tenant-1/batch-1.age"),
	})
	fmt.Println("writer may read:", err == nil)
	_, err = srv.Client(srv.Reader).GetObject(ctx, &s3.GetObjectInput{
		Bucket:    aws.String("archive"),
		Key:       aws.String("tenant-1/batch-1.age"),
		VersionId: put.VersionId,
	})
	fmt.Println("reader may read:", err == nil)

	// Output:
	// version id returned: true
	// writer may read: false
	// reader may read: true
}
