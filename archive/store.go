package archive

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/smithy-go"
)

// ClientConfig says how to reach the bucket and as whom.
type ClientConfig struct {
	// Endpoint is the server's URL; empty means AWS.
	Endpoint string
	// Region is the bucket's region.
	Region string
	// PathStyle puts the bucket in the path rather than the host name.
	PathStyle bool
	// AccessKeyID and SecretAccessKey are the identity's credentials.
	AccessKeyID     string
	SecretAccessKey string
	// MaxConns is the number of idle connections kept to the server; set it
	// to the number of requests in flight. Default 16.
	MaxConns int
}

// NewClient returns an S3 client for cfg. It does not contact the server.
func NewClient(cfg ClientConfig) *s3.Client {
	maxConns := cfg.MaxConns
	if maxConns <= 0 {
		maxConns = 16
	}
	transport := &http.Transport{
		Proxy:                 http.ProxyFromEnvironment,
		DialContext:           (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		ForceAttemptHTTP2:     true,
		MaxIdleConns:          maxConns * 2,
		MaxIdleConnsPerHost:   maxConns,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   10 * time.Second,
		ExpectContinueTimeout: time.Second,
		ResponseHeaderTimeout: 60 * time.Second,
	}
	return s3.New(s3.Options{
		Region:       cfg.Region,
		Credentials:  credentials.NewStaticCredentialsProvider(cfg.AccessKeyID, cfg.SecretAccessKey, ""),
		UsePathStyle: cfg.PathStyle,
		BaseEndpoint: endpointPtr(cfg.Endpoint),
		HTTPClient:   &http.Client{Transport: transport},
		Retryer: retry.NewStandard(func(o *retry.StandardOptions) {
			o.MaxAttempts = 3
			o.MaxBackoff = 2 * time.Second
		}),
		// lethe sends its own SHA-256 with every put and checks the echo;
		// other checksums would only cost CPU.
		RequestChecksumCalculation: aws.RequestChecksumCalculationWhenRequired,
		ResponseChecksumValidation: aws.ResponseChecksumValidationWhenRequired,
	})
}

func endpointPtr(s string) *string {
	if s == "" {
		return nil
	}
	return aws.String(s)
}

// Errors that callers decide on. Each wraps the server's or network's error.
var (
	// ErrAccessDenied: the server refused these credentials for this action.
	ErrAccessDenied = errors.New("access denied")
	// ErrNoBucket: the bucket does not exist.
	ErrNoBucket = errors.New("no such bucket")
	// ErrNotFound: the object or version does not exist.
	ErrNotFound = errors.New("object not found")
	// ErrUnreachable: the server could not be reached.
	ErrUnreachable = errors.New("object store unreachable")
	// ErrNoObjectLock: the bucket has no Object Lock, and a put asked for a
	// lock mode.
	ErrNoObjectLock = errors.New("the bucket has no Object Lock configuration")
	// ErrExists: a put with If-None-Match found an object of that name.
	ErrExists = errors.New("an object of that name exists")
)

// Classify wraps err, an error of the S3 client, with the sentinel that
// describes it (ErrAccessDenied, ErrNoBucket, ErrNotFound, ErrUnreachable),
// if any.
func Classify(err error) error {
	if err == nil {
		return nil
	}
	var apiErr smithy.APIError
	if errors.As(err, &apiErr) {
		switch apiErr.ErrorCode() {
		case "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "Forbidden", "AllAccessDisabled":
			return fmt.Errorf("%w: %w", ErrAccessDenied, err)
		case "NoSuchBucket":
			return fmt.Errorf("%w: %w", ErrNoBucket, err)
		case "NoSuchKey", "NoSuchVersion", "NotFound":
			return fmt.Errorf("%w: %w", ErrNotFound, err)
		case "PreconditionFailed":
			return fmt.Errorf("%w: %w", ErrExists, err)
		case "InvalidRequest":
			if strings.Contains(apiErr.ErrorMessage(), "ObjectLock") || strings.Contains(apiErr.ErrorMessage(), "Object Lock") {
				return fmt.Errorf("%w: %w", ErrNoObjectLock, err)
			}
		}
	}
	var netErr net.Error
	var opErr *net.OpError
	if errors.As(err, &opErr) || (errors.As(err, &netErr) && netErr.Timeout()) ||
		strings.Contains(err.Error(), "connection refused") || strings.Contains(err.Error(), "connection reset") {
		return fmt.Errorf("%w: %w", ErrUnreachable, err)
	}
	return err
}
