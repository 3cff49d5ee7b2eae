//go:build !lethefault

package main

import "github.com/lethehq/lethe/jobs"

// installFault does nothing in the shipped binary: fault injection exists
// only in the crash tests' build (fault.go).
func installFault(func(string) string, *jobs.Services) error { return nil }
