//go:build !race

// Package race reports whether the race detector is on, so tests that count
// allocations (which -race changes) can skip themselves.
package race

// Enabled is true when built with -race.
const Enabled = false
