package crashfs

import (
	"errors"
	"math/rand/v2"
	"strings"
	"sync"
)

// ErrPowerOff is the error of every operation a PowerCut fails: the one it
// cut the power before and every one after.
var ErrPowerOff = errors.New("the power is off")

// Changes are the operations a Hook sees that change what a crash may find;
// a PowerCut counts only these.
var Changes = map[string]bool{"OpenFile": true, "Write": true, "WriteAt": true, "Sync": true, "Truncate": true,
	"Rename": true, "Remove": true, "SyncDir": true, "MkdirAll": true}

// A PowerCut cuts the power of an FS from inside its Hook: once armed, it
// crashes the FS before the n-th operation that changes it (of one kind, on
// one kind of file, if asked) and fails that operation and every later one
// with ErrPowerOff. Install it with WithHook(fsys, pc.Hook). It is safe for
// concurrent use: operations may come from the test goroutine and from the
// goroutines of the code under test (a log's writer, a compaction, an
// eraser).
type PowerCut struct {
	fsys *FS
	rng  *rand.Rand // the crash's choices; used under mu

	mu      sync.Mutex
	outcome Outcome // when set, the crash's choices instead of rng's
	onCut   func()  // called under mu just before the crash
	armed   bool
	op      string        // the operation counted; "" for any change
	suffix  string        // and the file name it must end with
	left    int           // operations to let through before the cut
	cut     *FS           // what the cut left; nil before it
	off     chan struct{} // closed at the cut
}

// NewPowerCut returns a PowerCut of fsys, disarmed, whose crash makes its
// choices (Random) from a PCG seeded with seed: a seed replays a cut.
func NewPowerCut(fsys *FS, seed uint64) *PowerCut {
	return &PowerCut{fsys: fsys, rng: rand.New(rand.NewPCG(seed, 0xc0)), off: make(chan struct{})}
}

// SetOutcome makes the crash's choices o's instead of the seed's.
func (pc *PowerCut) SetOutcome(o Outcome) {
	pc.mu.Lock()
	defer pc.mu.Unlock()
	pc.outcome = o
}

// OnCut sets f to be called at the cut, just before the crash, with no
// operation of the FS running: what f reads then (what the code under test
// had reported durable, say) the crash must keep. f must not call pc's
// methods. What f writes is visible to whoever returns from CutNow or sees
// Off closed.
func (pc *PowerCut) OnCut(f func()) {
	pc.mu.Lock()
	defer pc.mu.Unlock()
	pc.onCut = f
}

// Arm cuts the power before the n-th change (see Changes) from now, n ≥ 1,
// counting only operation op if op is not "", and only on names ending with
// suffix.
func (pc *PowerCut) Arm(op, suffix string, n int) {
	pc.mu.Lock()
	defer pc.mu.Unlock()
	pc.armed, pc.op, pc.suffix, pc.left = true, op, suffix, n-1
}

// Hook is the Hook to install on the FS (WithHook): it counts the armed
// operations, cuts the power before the chosen one, and fails it and every
// operation after with ErrPowerOff.
func (pc *PowerCut) Hook(op, name string) error {
	pc.mu.Lock()
	defer pc.mu.Unlock()
	switch {
	case pc.cut != nil:
		return ErrPowerOff
	case !pc.armed || !Changes[op] || (pc.op != "" && op != pc.op) || !strings.HasSuffix(name, pc.suffix):
		return nil
	case pc.left > 0:
		pc.left--
		return nil
	}
	pc.cutLocked()
	return ErrPowerOff
}

func (pc *PowerCut) cutLocked() {
	if pc.onCut != nil {
		pc.onCut()
	}
	if pc.outcome != nil {
		pc.cut = pc.fsys.CrashWith(pc.outcome)
	} else {
		pc.cut = pc.fsys.Crash(pc.rng)
	}
	close(pc.off)
}

// CutNow cuts the power if the armed operation has not come yet, and
// returns what the cut left. Every call returns the same FS.
func (pc *PowerCut) CutNow() *FS {
	pc.mu.Lock()
	defer pc.mu.Unlock()
	if pc.cut == nil {
		pc.cutLocked()
	}
	return pc.cut
}

// IsCut reports whether the power has been cut.
func (pc *PowerCut) IsCut() bool {
	select {
	case <-pc.off:
		return true
	default:
		return false
	}
}

// Off returns a channel closed at the cut.
func (pc *PowerCut) Off() <-chan struct{} { return pc.off }
