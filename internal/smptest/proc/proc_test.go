package proc

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// fakeServer writes a shell script that behaves as "smp-server start" does
// for the launcher: with "start --data DIR ...", it writes DIR/fingerprint,
// logs its arguments, $SMPTEST_X and its open-file limit to standard error,
// prints "listening on" and runs until SIGTERM (trap: what it does then).
// Its idle loop waits on a sleep that holds none of its output pipes, so
// that the trap runs at once and a kill closes the pipes at once.
func fakeServer(t *testing.T, trap string) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "smp-server")
	script := `#!/bin/sh
mkdir -p "$3" && echo FP1234 > "$3/fingerprint"
echo "args: $*" >&2
echo "x=$SMPTEST_X nofile=$(ulimit -n)" >&2
trap '` + trap + `' TERM
echo "smp-server: listening on 127.0.0.1:4321"
while :; do sleep 1 >/dev/null 2>&1 & wait $!; done
`
	if err := os.WriteFile(bin, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return bin
}

func TestStartAndTerminate(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	p, err := Start(t.Context(), Config{Bin: fakeServer(t, `echo bye >&2; exit 3`), DataDir: dir,
		Args: []string{"--fsync", "never"}, Env: []string{"SMPTEST_X=42"}, NoFile: 512})
	if err != nil {
		t.Fatal(err)
	}
	if p.Addr != "127.0.0.1:4321" || p.Fingerprint != "FP1234" || p.DataDir != dir {
		t.Fatalf("addr %q fingerprint %q data %q", p.Addr, p.Fingerprint, p.DataDir)
	}
	for _, want := range []string{"args: start --data " + dir + " --listen 127.0.0.1:0 --fsync never", "x=42 nofile=512"} {
		if err := p.WaitOutput(t.Context(), want, 1); err != nil {
			t.Fatalf("%v; stderr:\n%s", err, p.Stderr())
		}
	}
	if code, err := p.Terminate(syscall.SIGTERM, time.Minute); code != 3 || err != nil {
		t.Fatalf("Terminate: status %d, %v; want 3 from the trap", code, err)
	}
	if !strings.Contains(p.Stderr(), "bye") || !strings.Contains(p.Stdout(), "listening on") {
		t.Fatalf("stdout %q stderr %q", p.Stdout(), p.Stderr())
	}
	if code, err := p.Terminate(syscall.SIGINT, time.Minute); code != 3 || err != nil {
		t.Fatalf("second Terminate: %d, %v; want the first one's status", code, err)
	}
}

func TestKillThenTerminate(t *testing.T) {
	p, err := Start(t.Context(), Config{Bin: fakeServer(t, `exit 0`), DataDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	p.Kill()
	select {
	case <-p.Exited():
	default:
		t.Fatal("Kill returned before the process exited")
	}
	if code, err := p.Terminate(syscall.SIGTERM, time.Minute); code != -1 || err != nil {
		t.Fatalf("Terminate after Kill: %d, %v; want -1 (killed by a signal), no error", code, err)
	}
}

// A server that ignores the signal is killed once the grace period is over.
func TestTerminateKillsAfterGrace(t *testing.T) {
	p, err := Start(t.Context(), Config{Bin: fakeServer(t, ``), DataDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	code, err := p.Terminate(syscall.SIGTERM, 50*time.Millisecond)
	if code != -1 || err == nil || !strings.Contains(err.Error(), "killed") {
		t.Fatalf("Terminate of a server ignoring SIGTERM: %d, %v; want -1 and an error saying it was killed", code, err)
	}
}

func TestExitBeforeListening(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "smp-server")
	if err := os.WriteFile(bin, []byte("#!/bin/sh\necho 'cannot open the log' >&2\nexit 1\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	_, err := Start(t.Context(), Config{Bin: bin, DataDir: t.TempDir()})
	if err == nil || !strings.Contains(err.Error(), "exited before listening") || !strings.Contains(err.Error(), "cannot open the log") {
		t.Fatalf("Start: %v; want an error with the server's output", err)
	}
}

// Start gives up when its context ends, and kills the server.
func TestStartCancelled(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "smp-server")
	if err := os.WriteFile(bin, []byte("#!/bin/sh\necho 'not listening yet' >&2\nwhile :; do sleep 1 >/dev/null 2>&1 & wait $!; done\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	spawned := make(chan struct{})
	go func() {
		<-spawned
		cancel()
	}()
	_, err := Start(ctx, Config{Bin: bin, DataDir: t.TempDir(), Spawn: func(start func() error) error {
		defer close(spawned)
		return start()
	}})
	if err == nil || !strings.Contains(err.Error(), "context canceled") {
		t.Fatalf("Start: %v; want the context's error", err)
	}
}
