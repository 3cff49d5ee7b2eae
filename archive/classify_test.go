package archive

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/stretchr/testify/require"

	"github.com/lethehq/lethe/internal/s3dev"
	"github.com/lethehq/lethe/internal/testenv"
)

func newClient(srv *s3dev.Server, c s3dev.Credentials) *s3.Client {
	return NewClient(ClientConfig{Endpoint: srv.Endpoint, Region: "us-east-1", PathStyle: true,
		AccessKeyID: c.AccessKeyID, SecretAccessKey: c.SecretAccessKey})
}

// TestClassifyServerErrors checks classify against the errors a real
// server returns, including bodiless HEAD responses.
func TestClassifyServerErrors(t *testing.T) {
	t.Parallel()
	b := testenv.NewBucket(t)
	ctx := t.Context()
	root := newClient(b.Server, b.Server.Root)
	writer := newClient(b.Server, b.Server.Writer)
	key := "v1/" + "00" + ".age"
	_, err := root.PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String(b.Name), Key: aws.String(key), Body: bytes.NewReader([]byte("x"))})
	require.NoError(t, err)

	_, err = writer.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String(b.Name), Key: aws.String(key)})
	require.ErrorIs(t, Classify(err), ErrAccessDenied, "worker GetObject: %v", err)
	_, err = writer.HeadObject(ctx, &s3.HeadObjectInput{Bucket: aws.String(b.Name), Key: aws.String(key)})
	require.ErrorIs(t, Classify(err), ErrAccessDenied, "worker HeadObject: %v", err)

	_, err = root.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String(b.Name), Key: aws.String("v1/missing.age")})
	require.ErrorIs(t, Classify(err), ErrNotFound, "%v", err)
	_, err = root.HeadObject(ctx, &s3.HeadObjectInput{Bucket: aws.String(b.Name), Key: aws.String("v1/missing.age")})
	require.ErrorIs(t, Classify(err), ErrNotFound, "%v", err)
	_, err = root.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String("no-such-" + b.Name), Key: aws.String(key)})
	require.ErrorIs(t, Classify(err), ErrNoBucket, "%v", err)

	// The original error stays reachable.
	c := Classify(err)
	require.ErrorIs(t, c, err)

	require.NoError(t, Classify(nil))
	plain := errors.New("something else")
	require.Equal(t, plain, Classify(plain))
	for _, sentinel := range []error{ErrAccessDenied, ErrNoBucket, ErrNotFound, ErrUnreachable} {
		require.NotErrorIs(t, Classify(plain), sentinel)
	}
	refused := &net.OpError{Op: "dial", Net: "tcp", Err: errors.New("connection refused")}
	require.ErrorIs(t, Classify(fmt.Errorf("wrapped: %w", refused)), ErrUnreachable)
	require.ErrorIs(t, Classify(context.DeadlineExceeded), context.DeadlineExceeded)
}
