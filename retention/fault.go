package retention

import "fmt"

// Fault points of a batch, at which crash tests stop it as a crash would.
// Only tests set the hook that stops there (export_test.go, and in test
// builds of lethe, fault_hook.go); in the shipped binary they do nothing.
const (
	FaultBeforePut    = "before_put"    // the segment recorded as pending, nothing put
	FaultAfterPut     = "after_put"     // the segment put and verified, nothing committed
	FaultDuringDelete = "during_delete" // inside the commit, after the first table's delete
	FaultBeforeCommit = "before_commit" // manifest, keys, deletes and audit written, but no COMMIT
	FaultAfterCommit  = "after_commit"  // committed, the batch not yet marked done
)

// Faults is where work calls the crash tests' hook. Its zero value, which
// the shipped binary always has, does nothing.
type Faults struct {
	hook func(point string) error
}

// FaultsAt returns Faults that call hook at each fault point; an error hook
// returns aborts the work there as a crash would. Only tests use it.
func FaultsAt(hook func(point string) error) Faults { return Faults{hook: hook} }

// At calls the hook, if any, at point.
func (f Faults) At(point string) error {
	if f.hook == nil {
		return nil
	}
	if err := f.hook(point); err != nil {
		return fmt.Errorf("fault injected at %s: %w", point, err)
	}
	return nil
}
