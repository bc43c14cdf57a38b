package smptest

import (
	"context"
	"os"
	"sync"
	"testing"

	"github.com/smprelay/smprelay/internal/race"
	"github.com/smprelay/smprelay/internal/smptest/proc"
)

// built is what BuildCommand built in this test binary run: one directory,
// one binary (or the error that stopped its build) per import path.
var built struct {
	mu   sync.Mutex
	dir  string
	bins map[string]builtBin
}

type builtBin struct {
	path string
	err  error
}

// BuildCommand builds the main package at importPath (e.g.
// "github.com/smprelay/smprelay/cmd/smp") once per test binary run, with
// -race when the tests have it, and returns the binary's path; a build that
// failed fails every later call at once. Call Main (or Cleanup) from TestMain
// to remove the build directory.
func BuildCommand(t testing.TB, importPath string) string {
	t.Helper()
	built.mu.Lock()
	defer built.mu.Unlock()
	b, ok := built.bins[importPath]
	if !ok {
		if built.dir == "" {
			dir, err := os.MkdirTemp("", "smptest-bin-")
			if err != nil {
				t.Fatalf("smptest: %v", err)
			}
			built.dir, built.bins = dir, make(map[string]builtBin)
		}
		b.path, b.err = proc.Build(context.Background(), built.dir, importPath, race.Enabled)
		built.bins[importPath] = b
	}
	if b.err != nil {
		t.Fatalf("smptest: building %s: %v", importPath, b.err)
	}
	return b.path
}

// BuildServer is BuildCommand for smp-server (proc.ServerPackage). When the tests
// run with -race the server is built with -race too, so a data race in the
// server fails its exit status check.
func BuildServer(t testing.TB) string {
	t.Helper()
	return BuildCommand(t, proc.ServerPackage)
}

// Cleanup removes the binaries BuildServer and BuildCommand built.
func Cleanup() {
	built.mu.Lock()
	defer built.mu.Unlock()
	if built.dir != "" {
		os.RemoveAll(built.dir)
		built.dir, built.bins = "", nil
	}
}
