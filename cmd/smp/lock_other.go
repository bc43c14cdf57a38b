//go:build !unix

package main

// lockFile is a no-op where flock is missing: concurrent smp processes on
// one state file may then lose an update.
func lockFile(string) (func(), error) { return func() {}, nil }

// tryLockFile is a no-op where flock is missing.
func tryLockFile(string) (func(), bool, error) { return func() {}, true, nil }
