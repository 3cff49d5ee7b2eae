package s3dev_test

// Least privilege, held against a real versitygw (docs/ARCHITECTURE.md, invariant 4):
// one table of every S3 call that matters, with what the archive worker
// (the writer) and the restore account (the reader) may do, and checks that
// the IAM documents under docs/iam say the same as the bucket policy the
// tests and the demo install.

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/stretchr/testify/require"

	"github.com/lethehq/lethe/internal/s3dev"
)

// verdict is what an identity may do with a call.
type verdict int

const (
	allow verdict = iota + 1 // the call succeeds
	deny                     // 403: AccessDenied, or Forbidden for HEAD (no body)
)

// target is the object a call of the matrix acts on: one version put by the
// writer for this call alone, so that calls do not see each other.
type target struct {
	key, versionID string
	body           []byte
}

// privilegeCall is one row of the matrix.
type privilegeCall struct {
	name string
	// head marks a HEAD request, whose 403 carries no body: its error code
	// is the status text, "Forbidden".
	head bool
	// call makes the request as c. It must be harmless to the bucket when
	// root makes it (it re-sets what is set, or fails for a reason other
	// than authorization), so that the same call can show it is well formed.
	call           func(t *testing.T, b *testBundle, c *s3.Client, o target) error
	writer, reader verdict
	// check, if set, runs after an allowed call succeeded, as root.
	check func(t *testing.T, b *testBundle, o target)
}

// privilegeMatrix is what each identity may do. The writer (the archive
// worker) puts, holds, lists versions and deletes versions, and reads
// nothing; the reader (lethe restore) gets objects, and nothing else.
func privilegeMatrix() []privilegeCall {
	bucket := func(b *testBundle) *string { return aws.String(b.bucket) }
	return []privilegeCall{
		// What the worker does.
		{name: "PutObject with SHA-256 checksum", writer: allow, reader: deny,
			call: func(t *testing.T, b *testBundle, c *s3.Client, o target) error {
				body := []byte("a second version of " + o.key)
				out, err := b.put(t, c, o.key, body)
				if err == nil {
					require.NotEmpty(t, aws.ToString(out.VersionId), "a put into a versioned bucket gives a version id")
					require.Equal(t, sha256Base64(body), aws.ToString(out.ChecksumSHA256), "the server echoes the checksum")
				}
				return err
			}},
		{name: "PutObject with a legal hold", writer: allow, reader: deny,
			call: func(t *testing.T, b *testBundle, c *s3.Client, o target) error {
				body := []byte("held from the start")
				_, err := c.PutObject(t.Context(), &s3.PutObjectInput{
					Bucket: bucket(b), Key: aws.String(o.key + "-held"), Body: bytes.NewReader(body),
					ChecksumSHA256:            aws.String(sha256Base64(body)),
					ObjectLockLegalHoldStatus: types.ObjectLockLegalHoldStatusOn,
				})
				return err
			}},
		{name: "PutObject with object-lock retention", writer: deny, reader: deny,
			call: func(t *testing.T, b *testBundle, c *s3.Client, o target) error {
				// Retention would make the version undeletable by a deletion
				// request: only the bucket's owner may set it.
				body := []byte("retained")
				_, err := c.PutObject(t.Context(), &s3.PutObjectInput{
					Bucket: bucket(b), Key: aws.String(o.key + "-retained"), Body: bytes.NewReader(body),
					ChecksumSHA256:            aws.String(sha256Base64(body)),
					ObjectLockMode:            types.ObjectLockModeGovernance,
					ObjectLockRetainUntilDate: aws.Time(time.Now().Add(time.Hour)),
				})
				return err
			}},
		{name: "PutObjectLegalHold", writer: allow, reader: deny,
			call: func(t *testing.T, b *testBundle, c *s3.Client, o target) error {
				if err := b.hold(t, c, o.key, o.versionID, types.ObjectLockLegalHoldStatusOn); err != nil {
					return err
				}
				return b.hold(t, c, o.key, o.versionID, types.ObjectLockLegalHoldStatusOff)
			}},
		{name: "ListObjectVersions", writer: allow, reader: deny,
			call: func(t *testing.T, b *testBundle, c *s3.Client, o target) error {
				out, err := c.ListObjectVersions(t.Context(), &s3.ListObjectVersionsInput{Bucket: bucket(b), Prefix: aws.String(o.key)})
				if err == nil {
					require.Len(t, out.Versions, 1)
					require.Equal(t, o.versionID, aws.ToString(out.Versions[0].VersionId))
				}
				return err
			}},
		{name: "DeleteObject with VersionId", writer: allow, reader: deny,
			call: func(t *testing.T, b *testBundle, c *s3.Client, o target) error {
				return b.deleteVersion(t, c, o.key, o.versionID)
			},
			check: func(t *testing.T, b *testBundle, o target) {
				out, err := b.root.ListObjectVersions(t.Context(), &s3.ListObjectVersionsInput{Bucket: aws.String(b.bucket), Prefix: aws.String(o.key)})
				require.NoError(t, err)
				require.Empty(t, out.Versions, "the version is still there")
				require.Empty(t, out.DeleteMarkers)
			}},
		{name: "DeleteObject (a delete marker)", writer: allow, reader: deny,
			call: func(t *testing.T, b *testBundle, c *s3.Client, o target) error {
				_, err := c.DeleteObject(t.Context(), &s3.DeleteObjectInput{Bucket: bucket(b), Key: aws.String(o.key)})
				return err
			}},

		// What only the reader does.
		{name: "GetObject", writer: deny, reader: allow,
			call: func(t *testing.T, b *testBundle, c *s3.Client, o target) error {
				return getAndCompare(t, c, &s3.GetObjectInput{Bucket: bucket(b), Key: aws.String(o.key)}, o.body)
			}},
		{name: "GetObject with VersionId", writer: deny, reader: allow,
			call: func(t *testing.T, b *testBundle, c *s3.Client, o target) error {
				return getAndCompare(t, c, &s3.GetObjectInput{Bucket: bucket(b), Key: aws.String(o.key), VersionId: aws.String(o.versionID)}, o.body)
			}},
		{name: "GetObject of a byte range", writer: deny, reader: allow,
			call: func(t *testing.T, b *testBundle, c *s3.Client, o target) error {
				return getAndCompare(t, c, &s3.GetObjectInput{Bucket: bucket(b), Key: aws.String(o.key), Range: aws.String("bytes=0-3")}, o.body[:4])
			}},
		{name: "HeadObject", head: true, writer: deny, reader: allow,
			call: func(t *testing.T, b *testBundle, c *s3.Client, o target) error {
				_, err := c.HeadObject(t.Context(), &s3.HeadObjectInput{Bucket: bucket(b), Key: aws.String(o.key)})
				return err
			}},
		{name: "HeadObject with VersionId and checksum", head: true, writer: deny, reader: allow,
			call: func(t *testing.T, b *testBundle, c *s3.Client, o target) error {
				out, err := c.HeadObject(t.Context(), &s3.HeadObjectInput{Bucket: bucket(b), Key: aws.String(o.key),
					VersionId: aws.String(o.versionID), ChecksumMode: types.ChecksumModeEnabled})
				if err == nil {
					require.Equal(t, sha256Base64(o.body), aws.ToString(out.ChecksumSHA256))
				}
				return err
			}},

		// What neither does.
		{name: "CopyObject from an archived object", writer: deny, reader: deny,
			call: func(t *testing.T, b *testBundle, c *s3.Client, o target) error {
				_, err := c.CopyObject(t.Context(), &s3.CopyObjectInput{Bucket: bucket(b), Key: aws.String(o.key + "-copy"),
					CopySource: aws.String(b.bucket + "/" + o.key)})
				return err
			}},
		{name: "PutObjectRetention", writer: deny, reader: deny,
			call: func(t *testing.T, b *testBundle, c *s3.Client, o target) error {
				_, err := c.PutObjectRetention(t.Context(), &s3.PutObjectRetentionInput{Bucket: bucket(b), Key: aws.String(o.key),
					VersionId: aws.String(o.versionID),
					Retention: &types.ObjectLockRetention{Mode: types.ObjectLockRetentionModeGovernance, RetainUntilDate: aws.Time(time.Now().Add(time.Hour))}})
				return err
			}},
		{name: "GetObjectLegalHold", writer: deny, reader: deny,
			call: func(t *testing.T, b *testBundle, c *s3.Client, o target) error {
				_, err := c.GetObjectLegalHold(t.Context(), &s3.GetObjectLegalHoldInput{Bucket: bucket(b), Key: aws.String(o.key), VersionId: aws.String(o.versionID)})
				if err != nil && !isStatus(err, http.StatusForbidden) {
					return nil // root: a version never held has no legal hold configuration
				}
				return err
			}},
		{name: "GetObjectRetention", writer: deny, reader: deny,
			call: func(t *testing.T, b *testBundle, c *s3.Client, o target) error {
				_, err := c.GetObjectRetention(t.Context(), &s3.GetObjectRetentionInput{Bucket: bucket(b), Key: aws.String(o.key), VersionId: aws.String(o.versionID)})
				if err != nil && !isStatus(err, http.StatusForbidden) {
					return nil // root: no retention was ever set
				}
				return err
			}},
		{name: "PutObjectTagging", writer: deny, reader: deny,
			call: func(t *testing.T, b *testBundle, c *s3.Client, o target) error {
				_, err := c.PutObjectTagging(t.Context(), &s3.PutObjectTaggingInput{Bucket: bucket(b), Key: aws.String(o.key),
					Tagging: &types.Tagging{TagSet: []types.Tag{{Key: aws.String("k"), Value: aws.String("v")}}}})
				return err
			}},
		{name: "ListObjectsV2", writer: deny, reader: deny,
			call: func(t *testing.T, b *testBundle, c *s3.Client, o target) error {
				_, err := c.ListObjectsV2(t.Context(), &s3.ListObjectsV2Input{Bucket: bucket(b)})
				return err
			}},
		{name: "ListObjects", writer: deny, reader: deny,
			call: func(t *testing.T, b *testBundle, c *s3.Client, o target) error {
				_, err := c.ListObjects(t.Context(), &s3.ListObjectsInput{Bucket: bucket(b)})
				return err
			}},
		{name: "HeadBucket", head: true, writer: deny, reader: deny,
			call: func(t *testing.T, b *testBundle, c *s3.Client, o target) error {
				_, err := c.HeadBucket(t.Context(), &s3.HeadBucketInput{Bucket: bucket(b)})
				return err
			}},
		{name: "GetBucketPolicy", writer: deny, reader: deny,
			call: func(t *testing.T, b *testBundle, c *s3.Client, o target) error {
				_, err := c.GetBucketPolicy(t.Context(), &s3.GetBucketPolicyInput{Bucket: bucket(b)})
				return err
			}},
		{name: "PutBucketPolicy", writer: deny, reader: deny,
			call: func(t *testing.T, b *testBundle, c *s3.Client, o target) error {
				// The policy in force, so that a call that got through
				// changes nothing the other rows depend on.
				_, err := c.PutBucketPolicy(t.Context(), &s3.PutBucketPolicyInput{Bucket: bucket(b),
					Policy: aws.String(s3dev.BucketPolicy(b.bucket, b.srv.Writer.AccessKeyID, b.srv.Reader.AccessKeyID))})
				return err
			}},
		{name: "DeleteBucketPolicy", writer: deny, reader: deny,
			call: func(t *testing.T, b *testBundle, c *s3.Client, o target) error {
				if c == b.root {
					return nil // root would lift the policy for every other row
				}
				_, err := c.DeleteBucketPolicy(t.Context(), &s3.DeleteBucketPolicyInput{Bucket: bucket(b)})
				return err
			}},
		{name: "GetBucketVersioning", writer: deny, reader: deny,
			call: func(t *testing.T, b *testBundle, c *s3.Client, o target) error {
				_, err := c.GetBucketVersioning(t.Context(), &s3.GetBucketVersioningInput{Bucket: bucket(b)})
				return err
			}},
		{name: "PutBucketVersioning", writer: deny, reader: deny,
			call: func(t *testing.T, b *testBundle, c *s3.Client, o target) error {
				_, err := c.PutBucketVersioning(t.Context(), &s3.PutBucketVersioningInput{Bucket: bucket(b),
					VersioningConfiguration: &types.VersioningConfiguration{Status: types.BucketVersioningStatusEnabled}})
				return err
			}},
		{name: "GetObjectLockConfiguration", writer: deny, reader: deny,
			call: func(t *testing.T, b *testBundle, c *s3.Client, o target) error {
				_, err := c.GetObjectLockConfiguration(t.Context(), &s3.GetObjectLockConfigurationInput{Bucket: bucket(b)})
				return err
			}},
		{name: "PutObjectLockConfiguration", writer: deny, reader: deny,
			call: func(t *testing.T, b *testBundle, c *s3.Client, o target) error {
				_, err := c.PutObjectLockConfiguration(t.Context(), &s3.PutObjectLockConfigurationInput{Bucket: bucket(b),
					ObjectLockConfiguration: &types.ObjectLockConfiguration{ObjectLockEnabled: types.ObjectLockEnabledEnabled}})
				return err
			}},
		{name: "GetBucketAcl", writer: deny, reader: deny,
			call: func(t *testing.T, b *testBundle, c *s3.Client, o target) error {
				_, err := c.GetBucketAcl(t.Context(), &s3.GetBucketAclInput{Bucket: bucket(b)})
				return err
			}},
		{name: "ListMultipartUploads", writer: deny, reader: deny,
			call: func(t *testing.T, b *testBundle, c *s3.Client, o target) error {
				_, err := c.ListMultipartUploads(t.Context(), &s3.ListMultipartUploadsInput{Bucket: bucket(b)})
				return err
			}},
		{name: "DeleteBucket", writer: deny, reader: deny,
			call: func(t *testing.T, b *testBundle, c *s3.Client, o target) error {
				// The bucket holds at least this row's object: root gets
				// BucketNotEmpty, and a wrongly allowed call deletes nothing.
				_, err := c.DeleteBucket(t.Context(), &s3.DeleteBucketInput{Bucket: bucket(b)})
				return err
			}},
	}
}

// getAndCompare gets an object and requires its body to be want.
func getAndCompare(t *testing.T, c *s3.Client, in *s3.GetObjectInput, want []byte) error {
	t.Helper()
	out, err := c.GetObject(t.Context(), in)
	if err != nil {
		return err
	}
	got, err := io.ReadAll(out.Body)
	require.NoError(t, err)
	require.NoError(t, out.Body.Close())
	require.Equal(t, string(want), string(got))
	return nil
}

func isStatus(err error, status int) bool {
	var re *awshttp.ResponseError
	return errors.As(err, &re) && re.HTTPStatusCode() == status
}

// TestPrivilegeMatrix makes every call of privilegeMatrix as the writer,
// the reader and root on a bucket with s3dev's policy. An allowed call must
// succeed; a denied one must fail with 403 AccessDenied (Forbidden for a
// HEAD); root must get past authorization with the same call, which shows
// that the denial is the policy's and not a malformed request's.
func TestPrivilegeMatrix(t *testing.T) {
	t.Parallel()
	b := setup(t)
	identities := []struct {
		name   string
		client *s3.Client
		want   func(privilegeCall) verdict
	}{
		{"writer", b.writer, func(c privilegeCall) verdict { return c.writer }},
		{"reader", b.reader, func(c privilegeCall) verdict { return c.reader }},
		{"root", b.root, nil},
	}
	seen := map[string]bool{}
	for _, pc := range privilegeMatrix() {
		require.False(t, seen[pc.name], "row %q twice", pc.name)
		seen[pc.name] = true
		for _, id := range identities {
			// Not parallel: some rows act on the bucket itself.
			t.Run(id.name+"/"+pc.name, func(t *testing.T) {
				o := target{key: "matrix/" + id.name + "/" + strings.ReplaceAll(pc.name, " ", "-"), body: []byte("archived ciphertext " + randomHex(t, 8))}
				o.versionID = b.mustPut(t, o.key, o.body)
				err := pc.call(t, b, id.client, o)
				if id.want == nil {
					if err != nil {
						require.False(t, isStatus(err, http.StatusForbidden), "root was refused, so the row proves nothing: %v", err)
					}
					return
				}
				switch id.want(pc) {
				case allow:
					require.NoError(t, err, "the %s must be allowed %s", id.name, pc.name)
					if pc.check != nil {
						pc.check(t, b, o)
					}
				case deny:
					code := "AccessDenied"
					if pc.head {
						code = "Forbidden"
					}
					require.Error(t, err, "the %s must not be allowed %s", id.name, pc.name)
					requireAPIError(t, err, http.StatusForbidden, code)
				}
			})
		}
	}

	// The denied calls changed nothing the bucket's safety rests on: its
	// policy and versioning are as installed, and no denied CopyObject
	// wrote an object.
	t.Run("DeniedCallsChangedNothing", func(t *testing.T) {
		out, err := b.root.GetBucketPolicy(t.Context(), &s3.GetBucketPolicyInput{Bucket: aws.String(b.bucket)})
		require.NoError(t, err)
		require.JSONEq(t, s3dev.BucketPolicy(b.bucket, b.srv.Writer.AccessKeyID, b.srv.Reader.AccessKeyID), aws.ToString(out.Policy))
		v, err := b.root.GetBucketVersioning(t.Context(), &s3.GetBucketVersioningInput{Bucket: aws.String(b.bucket)})
		require.NoError(t, err)
		require.Equal(t, types.BucketVersioningStatusEnabled, v.Status)
		list, err := b.root.ListObjectVersions(t.Context(), &s3.ListObjectVersionsInput{Bucket: aws.String(b.bucket), Prefix: aws.String("matrix/")})
		require.NoError(t, err)
		for _, v := range list.Versions {
			k := aws.ToString(v.Key)
			if !strings.HasPrefix(k, "matrix/root/") {
				require.False(t, strings.HasSuffix(k, "-copy"), "a denied CopyObject wrote %s", k)
			}
		}
	})
}

// TestPrivilegeStrangers checks that credentials the server does not know,
// or a known access key signed with the wrong secret, are refused whatever
// they ask for.
func TestPrivilegeStrangers(t *testing.T) {
	t.Parallel()
	b := setup(t)
	versionID := b.mustPut(t, "stranger", []byte("not for strangers"))
	for name, creds := range map[string]s3dev.Credentials{
		"unknown access key":   {AccessKeyID: "AKNOBODY" + randomHex(t, 4), SecretAccessKey: randomHex(t, 16)},
		"writer, wrong secret": {AccessKeyID: b.srv.Writer.AccessKeyID, SecretAccessKey: randomHex(t, 16)},
		"reader, wrong secret": {AccessKeyID: b.srv.Reader.AccessKeyID, SecretAccessKey: randomHex(t, 16)},
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			c := b.srv.Client(creds)
			_, err := c.GetObject(t.Context(), &s3.GetObjectInput{Bucket: aws.String(b.bucket), Key: aws.String("stranger"), VersionId: aws.String(versionID)})
			require.True(t, isStatus(err, http.StatusForbidden), "GetObject: %v", err)
			_, err = b.put(t, c, "stranger", []byte("overwrite"))
			require.True(t, isStatus(err, http.StatusForbidden), "PutObject: %v", err)
			require.True(t, isStatus(b.deleteVersion(t, c, "stranger", versionID), http.StatusForbidden), "DeleteObject")
			_, err = c.ListObjectVersions(t.Context(), &s3.ListObjectVersionsInput{Bucket: aws.String(b.bucket)})
			require.True(t, isStatus(err, http.StatusForbidden), "ListObjectVersions: %v", err)
		})
	}
}

// ---------------------------------------------------------------------------
// The IAM documents of docs/iam against the bucket policy.

// iamDir is docs/iam of the repository.
func iamDir(t *testing.T) string {
	t.Helper()
	dir, err := filepath.Abs(filepath.Join("..", "..", "docs", "iam"))
	require.NoError(t, err)
	require.DirExists(t, dir, "docs/iam is missing")
	return dir
}

// policyDoc is an IAM policy document in the form the docs and s3dev write:
// every Action, Resource and principal list is an array.
type policyDoc struct {
	Version   string
	Statement []policyStmt
}

type policyStmt struct {
	Sid       string
	Effect    string
	Principal map[string][]string `json:",omitempty"`
	Action    []string
	Resource  []string
}

// readPolicy parses a file of docs/iam strictly: unknown fields (a
// NotAction, a Condition) are errors, because the checks below would not
// understand them.
func readPolicy(t *testing.T, name string) policyDoc {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(iamDir(t), name))
	require.NoError(t, err)
	return parsePolicy(t, name, raw)
}

func parsePolicy(t *testing.T, name string, raw []byte) policyDoc {
	t.Helper()
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	var doc policyDoc
	require.NoError(t, dec.Decode(&doc), "%s is not a policy document in the expected form", name)
	require.False(t, dec.More(), "%s has data after the document", name)
	require.Equal(t, "2012-10-17", doc.Version, "%s: Version", name)
	require.NotEmpty(t, doc.Statement, "%s: no statements", name)
	return doc
}

// grants flattens statements of one effect into "action resource" pairs,
// sorted, optionally only those whose principal list holds principal.
func grants(doc policyDoc, effect, principal string) []string {
	var out []string
	for _, st := range doc.Statement {
		if st.Effect != effect || (principal != "" && !slices.Contains(st.Principal["AWS"], principal)) {
			continue
		}
		for _, a := range st.Action {
			for _, r := range st.Resource {
				out = append(out, a+" "+r)
			}
		}
	}
	sort.Strings(out)
	return out
}

// substitute replaces the placeholders in every string of a parsed JSON
// value, keys included.
func substitute(v any, r *strings.Replacer) any {
	switch v := v.(type) {
	case string:
		return r.Replace(v)
	case []any:
		out := make([]any, len(v))
		for i, e := range v {
			out[i] = substitute(e, r)
		}
		return out
	case map[string]any:
		out := make(map[string]any, len(v))
		for k, e := range v {
			out[r.Replace(k)] = substitute(e, r)
		}
		return out
	}
	return v
}

func unmarshalAny(t *testing.T, raw []byte) any {
	t.Helper()
	var v any
	require.NoError(t, json.Unmarshal(raw, &v), "%s", raw)
	return v
}

// iamActionMatches reports whether an IAM action pattern (with * and ?)
// matches action, case-insensitively as IAM compares actions.
func iamActionMatches(pattern, action string) bool {
	re := "^" + strings.NewReplacer(`\*`, ".*", `\?`, ".").Replace(regexp.QuoteMeta(strings.ToLower(pattern))) + "$"
	return regexp.MustCompile(re).MatchString(strings.ToLower(action))
}

// TestIAMDocsMatchBucketPolicy checks docs/iam against s3dev.BucketPolicy,
// the policy every test and the demo install: the bucket-policy form is the
// same document once its placeholders are filled in, and the identity-based
// policies of the worker and restore roles grant exactly the same actions on
// the same resources, the worker's with an explicit Deny of every
// s3:GetObject* action as defence in depth.
func TestIAMDocsMatchBucketPolicy(t *testing.T) {
	t.Parallel()
	const bucketName, writerPrincipal, readerPrincipal = "lethe-archive-test", "AKWRITERTEST", "AKREADERTEST"
	installed := s3dev.BucketPolicy(bucketName, writerPrincipal, readerPrincipal)
	installedDoc := parsePolicy(t, "s3dev.BucketPolicy", []byte(installed))
	writerGrants := grants(installedDoc, "Allow", writerPrincipal)
	readerGrants := grants(installedDoc, "Allow", readerPrincipal)
	require.NotEmpty(t, writerGrants)
	require.NotEmpty(t, readerGrants)
	require.Empty(t, grants(installedDoc, "Deny", ""), "the installed policy has a Deny the docs do not mirror")
	toBucket := strings.NewReplacer("BUCKET", bucketName)

	t.Run("bucket-policy.json", func(t *testing.T) {
		t.Parallel()
		raw, err := os.ReadFile(filepath.Join(iamDir(t), "bucket-policy.json"))
		require.NoError(t, err)
		for _, p := range []string{"BUCKET", "WRITER", "READER"} {
			require.Contains(t, string(raw), p, "placeholder %s missing", p)
		}
		got := substitute(unmarshalAny(t, raw), strings.NewReplacer("BUCKET", bucketName, "WRITER", writerPrincipal, "READER", readerPrincipal))
		require.Equal(t, unmarshalAny(t, []byte(installed)), got, "docs/iam/bucket-policy.json is not s3dev.BucketPolicy")
	})

	t.Run("worker-policy.json", func(t *testing.T) {
		t.Parallel()
		doc := readPolicy(t, "worker-policy.json")
		for _, st := range doc.Statement {
			require.Empty(t, st.Principal, "an identity-based policy has no Principal (statement %q)", st.Sid)
			require.Contains(t, []string{"Allow", "Deny"}, st.Effect)
		}
		var allowed []string
		for _, g := range grants(doc, "Allow", "") {
			allowed = append(allowed, toBucket.Replace(g))
		}
		require.Equal(t, writerGrants, allowed, "the worker role's Allow is not the bucket policy's writer grant")

		var denied []string
		for _, g := range grants(doc, "Deny", "") {
			denied = append(denied, toBucket.Replace(g))
		}
		require.Equal(t, []string{"s3:GetObject* arn:aws:s3:::" + bucketName + "/*"}, denied, "the worker role must deny s3:GetObject* on the objects, and nothing else")
		// The Deny covers every read of an object and no action the worker
		// needs: an explicit Deny wins over any Allow.
		for _, read := range []string{"s3:GetObject", "s3:GetObjectVersion", "s3:GetObjectAttributes", "s3:GetObjectVersionAttributes", "s3:GetObjectTorrent"} {
			require.True(t, iamActionMatches("s3:GetObject*", read), read)
		}
		for _, g := range writerGrants {
			action, _, _ := strings.Cut(g, " ")
			require.False(t, iamActionMatches("s3:GetObject*", action), "the Deny would take %s from the worker", action)
		}
	})

	t.Run("restore-policy.json", func(t *testing.T) {
		t.Parallel()
		doc := readPolicy(t, "restore-policy.json")
		for _, st := range doc.Statement {
			require.Empty(t, st.Principal, "an identity-based policy has no Principal (statement %q)", st.Sid)
			require.Equal(t, "Allow", st.Effect, "statement %q", st.Sid)
		}
		var allowed []string
		for _, g := range grants(doc, "Allow", "") {
			allowed = append(allowed, toBucket.Replace(g))
		}
		require.Equal(t, readerGrants, allowed, "the restore role's Allow is not the bucket policy's reader grant")
	})

	t.Run("no wildcards but the Deny", func(t *testing.T) {
		t.Parallel()
		for _, name := range []string{"bucket-policy.json", "worker-policy.json", "restore-policy.json"} {
			doc := readPolicy(t, name)
			for _, st := range doc.Statement {
				for _, a := range st.Action {
					if st.Effect == "Allow" {
						require.NotContains(t, a, "*", "%s: statement %q allows a wildcard action", name, st.Sid)
					}
				}
				for _, r := range st.Resource {
					require.Contains(t, []string{"arn:aws:s3:::BUCKET", "arn:aws:s3:::BUCKET/*"}, r, "%s: statement %q", name, st.Sid)
				}
			}
		}
	})

	// Every policy shown in the README's Set-up section is one of these
	// files, so that the README cannot drift from what the tests install.
	t.Run("README", func(t *testing.T) {
		t.Parallel()
		raw, err := os.ReadFile(filepath.Join("..", "..", "README.md"))
		require.NoError(t, err)
		readme := string(raw)
		start := strings.Index(readme, "\n## Set-up\n")
		require.GreaterOrEqual(t, start, 0, "README has no Set-up section")
		section := readme[start+1:]
		if end := strings.Index(section[3:], "\n## "); end >= 0 {
			section = section[:end+3]
		}
		files := map[string]any{}
		for _, name := range []string{"bucket-policy.json", "worker-policy.json", "restore-policy.json"} {
			require.Contains(t, section, "docs/iam/"+name, "the Set-up section does not name docs/iam/%s", name)
			b, err := os.ReadFile(filepath.Join(iamDir(t), name))
			require.NoError(t, err)
			files[name] = unmarshalAny(t, b)
		}
		blocks := regexp.MustCompile("(?s)```json\n(.*?)```").FindAllStringSubmatch(section, -1)
		require.NotEmpty(t, blocks, "the Set-up section shows no policy")
		for _, m := range blocks {
			// Indented inside a list item: the indentation is not JSON's concern.
			shown := unmarshalAny(t, []byte(m[1]))
			match := ""
			for name, f := range files {
				if equalJSON(shown, f) {
					match = name
				}
			}
			require.NotEmpty(t, match, "a policy in the README's Set-up section is none of docs/iam:\n%s", m[1])
		}
	})
}

func equalJSON(a, b any) bool {
	x, _ := json.Marshal(a)
	y, _ := json.Marshal(b)
	return bytes.Equal(x, y)
}
