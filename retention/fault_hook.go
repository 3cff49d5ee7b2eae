//go:build lethefault

package retention

// InjectFault makes m call f at each fault point. It exists only in builds
// tagged lethefault: the crash tests' build of lethe.
func InjectFault(m *Mover, f func(point string) error) { m.faults = FaultsAt(f) }
