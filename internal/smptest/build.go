package smptest

import (
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/smprelay/smprelay/internal/race"
)

var commands struct {
	mu    sync.Mutex
	dir   string
	built map[string]string // import path → binary
}

// BuildCommand builds the main package at importPath (e.g.
// "github.com/smprelay/smprelay/cmd/smp") once per test binary run, with
// -race when the tests have it, and returns the binary's path. Call
// CleanupCommands from TestMain to remove the build directory.
func BuildCommand(t testing.TB, importPath string) string {
	t.Helper()
	commands.mu.Lock()
	defer commands.mu.Unlock()
	if bin, ok := commands.built[importPath]; ok {
		return bin
	}
	if commands.dir == "" {
		dir, err := os.MkdirTemp("", "smptest-cmd-")
		if err != nil {
			t.Fatalf("smptest: %v", err)
		}
		commands.dir, commands.built = dir, make(map[string]string)
	}
	bin := filepath.Join(commands.dir, path.Base(importPath))
	args := []string{"build", "-o", bin}
	if race.Enabled {
		args = append(args, "-race")
	}
	args = append(args, importPath)
	if out, err := exec.Command(goTool(), args...).CombinedOutput(); err != nil {
		t.Fatalf("smptest: go %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	commands.built[importPath] = bin
	return bin
}

// CleanupCommands removes the binaries BuildCommand built.
func CleanupCommands() {
	commands.mu.Lock()
	defer commands.mu.Unlock()
	if commands.dir != "" {
		os.RemoveAll(commands.dir)
		commands.dir, commands.built = "", nil
	}
}
