package lethe

import (
	"runtime"
	"runtime/debug"
)

// Build describes the running binary, from what the Go toolchain stamps
// into it.
type Build struct {
	// Version is the module's version: a tag, a pseudo-version derived
	// from the commit, or "(devel)".
	Version string `json:"version"`
	// Commit is the VCS revision built from, "unknown" without one.
	Commit string `json:"commit"`
	// Modified is set when the checkout had uncommitted changes.
	Modified bool `json:"modified"`
	// Go is the toolchain's version.
	Go string `json:"go"`
}

// BuildInfo returns the running binary's Build.
func BuildInfo() Build {
	b := Build{Version: "(devel)", Commit: "unknown", Go: runtime.Version()}
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return b
	}
	if bi.Main.Version != "" {
		b.Version = bi.Main.Version
	}
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			b.Commit = s.Value
		case "vcs.modified":
			b.Modified = s.Value == "true"
		}
	}
	return b
}
