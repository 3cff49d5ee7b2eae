package retention

import "fmt"

// Fault points of a batch, at which crash tests stop it as a crash would.
// Only tests set the hook that stops there (export_test.go, and in test
// builds of lethe, fault_hook.go); in the shipped binary they do nothing.
const (
	FaultBeforePut    = "before_put"    // puts counted, nothing put
	FaultAfterPut     = "after_put"     // objects put and verified, nothing committed
	FaultDuringDelete = "during_delete" // inside the commit, after the first table's delete
	FaultBeforeCommit = "before_commit" // everything done but COMMIT
	FaultAfterCommit  = "after_commit"  // committed, older versions not yet pruned
)

// at calls the fault hook, if any, at point.
func (m *Mover) at(point string) error {
	if m.fault == nil {
		return nil
	}
	if err := m.fault(point); err != nil {
		return fmt.Errorf("fault injected at %s: %w", point, err)
	}
	return nil
}
