package request

import "github.com/lethehq/lethe/retention"

// SetFault makes r call f at each fault point, for the tests of this
// package.
func SetFault(r *Eraser, f func(point string) error) { r.faults = retention.FaultsAt(f) }
