package archive

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
)

// RawPut puts n copies of body under the archiver's prefix + sub, inflight
// at a time, the way Put does (checksum sent and checked, same client),
// without encryption. It returns puts per second, then deletes what it put.
// lethe bench uses it to measure what the object store can do alone.
func (a *Archiver) RawPut(ctx context.Context, sub string, body []byte, n, inflight int) (float64, error) {
	sum := sha256.Sum256(body)
	next := make(chan int)
	go func() {
		defer close(next)
		for i := range n {
			select {
			case next <- i:
			case <-ctx.Done():
				return
			}
		}
	}()
	start := time.Now()
	var wg sync.WaitGroup
	var mu sync.Mutex
	var firstErr error
	put := make([]KeyVersion, 0, n)
	for range max(inflight, 1) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				st, err := a.put(ctx, a.prefix+sub+strconv.Itoa(i), body, sum[:], false)
				mu.Lock()
				if err != nil && firstErr == nil {
					firstErr = err
				} else if err == nil {
					put = append(put, KeyVersion{Key: st.Key, VersionID: st.VersionID})
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	rate := float64(n) / time.Since(start).Seconds()
	derr := a.DeleteKnown(ctx, put)
	if err := errors.Join(firstErr, derr); err != nil {
		return 0, err
	}
	return rate, nil
}

// KeyVersion names one object version.
type KeyVersion struct {
	Key, VersionID string
}

// DeleteKnown deletes the given object versions, 32 at a time, the
// versions of one key one after the other. It lists nothing, so its cost
// does not grow with the bucket.
func (a *Archiver) DeleteKnown(ctx context.Context, vs []KeyVersion) error {
	byKey := map[string][]string{}
	for _, v := range vs {
		byKey[v.Key] = append(byKey[v.Key], v.VersionID)
	}
	_, err := a.deleteByKey(ctx, byKey)
	return err
}

// deleteByKey deletes the versions of 32 keys at a time, the versions of
// one key one after the other: some servers mishandle concurrent deletes of
// the same key's versions. A key's first failure ends its deletes; the
// first error is returned with how many versions were deleted.
func (a *Archiver) deleteByKey(ctx context.Context, byKey map[string][]string) (int, error) {
	var wg sync.WaitGroup
	var mu sync.Mutex
	var firstErr error
	deleted := 0
	sem := make(chan struct{}, 32)
	for key, versions := range byKey {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			for _, v := range versions {
				err := a.deleteVersion(ctx, key, v)
				mu.Lock()
				if err != nil && firstErr == nil {
					firstErr = err
				}
				if err == nil {
					deleted++
				}
				mu.Unlock()
				if err != nil {
					return
				}
			}
		}()
	}
	wg.Wait()
	return deleted, firstErr
}

// DeletePrefix deletes every version and delete marker under the
// archiver's prefix + sub, a page at a time until none is left, and returns
// how many it deleted.
func (a *Archiver) DeletePrefix(ctx context.Context, sub string) (int, error) {
	in := &s3.ListObjectVersionsInput{Bucket: aws.String(a.bucket), Prefix: aws.String(a.prefix + sub)}
	deleted := 0
	for {
		out, err := a.store.ListObjectVersions(ctx, in)
		if err != nil {
			return deleted, fmt.Errorf("error listing object versions: %w", classify(err))
		}
		byKey := map[string][]string{}
		for _, v := range out.Versions {
			byKey[aws.ToString(v.Key)] = append(byKey[aws.ToString(v.Key)], aws.ToString(v.VersionId))
		}
		for _, m := range out.DeleteMarkers {
			byKey[aws.ToString(m.Key)] = append(byKey[aws.ToString(m.Key)], aws.ToString(m.VersionId))
		}
		n, err := a.deleteByKey(ctx, byKey)
		deleted += n
		if err != nil {
			return deleted, err
		}
		if len(byKey) == 0 {
			return deleted, nil
		}
		// Everything listed is gone, so list again from the start: paging
		// on with markers through what was just deleted is not reliable on
		// every server.
	}
}
