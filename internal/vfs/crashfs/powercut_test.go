package crashfs

import (
	"errors"
	"os"
	"testing"
)

// TestPowerCut: an armed PowerCut counts only the changes it was asked to,
// crashes before the n-th (calling OnCut first), and fails it and everything
// after; CutNow returns what that crash left.
func TestPowerCut(t *testing.T) {
	fsys := New()
	pc := NewPowerCut(fsys, 1)
	h := WithHook(fsys, pc.Hook)
	writeFile(t, h, "/a.log", []byte("before"), true) // not armed: not counted
	must(t, h.SyncDir("/"))
	cuts := 0
	pc.OnCut(func() { cuts++ })
	pc.Arm("Sync", ".log", 2)
	writeFile(t, h, "/b.txt", []byte("x"), true) // a Sync, but not of a .log
	f, err := h.OpenFile("/a.log", os.O_WRONLY|os.O_APPEND, 0)
	must(t, err)
	if _, err := f.Write([]byte(" after")); err != nil { // a change, but not a Sync
		t.Fatal(err)
	}
	must(t, f.Sync()) // the first Sync counted
	if pc.IsCut() {
		t.Fatal("cut before the armed operation")
	}
	if err := f.Sync(); !errors.Is(err, ErrPowerOff) {
		t.Fatalf("the armed Sync: %v, want ErrPowerOff", err)
	}
	if !pc.IsCut() || cuts != 1 {
		t.Fatalf("after the armed Sync: IsCut %v, OnCut called %d times", pc.IsCut(), cuts)
	}
	select {
	case <-pc.Off():
	default:
		t.Fatal("Off not closed at the cut")
	}
	if _, err := h.Stat("/a.log"); !errors.Is(err, ErrPowerOff) {
		t.Fatalf("Stat after the cut: %v, want ErrPowerOff", err)
	}
	cut := pc.CutNow()
	if cut != pc.CutNow() || cuts != 1 {
		t.Fatalf("CutNow crashed again (OnCut called %d times)", cuts)
	}
	if got := string(readFile(t, cut, "/a.log")); got != "before after" {
		t.Fatalf("what the cut left of a.log: %q, synced before the cut", got)
	}

	// Disarmed, CutNow cuts at once.
	pc = NewPowerCut(cut, 2)
	if pc.IsCut() {
		t.Fatal("a new PowerCut is cut")
	}
	if pc.CutNow() == nil || !pc.IsCut() {
		t.Fatal("CutNow did not cut")
	}
}
