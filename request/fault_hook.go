//go:build lethefault

package request

import "github.com/lethehq/lethe/retention"

// InjectFault makes r call f at each fault point. It exists only in builds
// tagged lethefault: the crash tests' build of lethe.
func InjectFault(r *Eraser, f func(point string) error) { r.faults = retention.FaultsAt(f) }
