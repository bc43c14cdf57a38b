package main

import (
	"bytes"
	"context"
	"flag"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// TestTerminalQR reads the half-block drawing back into modules and compares
// them with the encoder's.
func TestTerminalQR(t *testing.T) {
	text := "smp://" + strings.Repeat("x", 300)
	q, err := encodeQR(text)
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := drawQR(&buf, q); err != nil {
		t.Fatal(err)
	}
	rows := strings.Split(strings.TrimSuffix(buf.String(), "\n"), "\n")
	n := q.Size() + 2*qrBorder
	if qrColumns(q) != n {
		t.Fatalf("qrColumns %d, want %d", qrColumns(q), n)
	}
	if len(rows) != (n+1)/2 {
		t.Fatalf("%d rows for %d modules", len(rows), n)
	}
	for r, row := range rows {
		cells := []rune(row)
		if len(cells) != n {
			t.Fatalf("row %d has %d cells, want %d", r, len(cells), n)
		}
		for x, c := range cells {
			top := map[rune]bool{'█': false, '▀': false, '▄': true, ' ': true}[c]
			bottom := map[rune]bool{'█': false, '▀': true, '▄': false, ' ': true}[c]
			mx, my := x-qrBorder, 2*r-qrBorder
			in := func(y int) bool { return mx >= 0 && y >= 0 && mx < q.Size() && y < q.Size() }
			want := in(my) && q.Module(mx, my)
			if top != want {
				t.Fatalf("module (%d,%d): drawn dark=%v, want %v", mx, my, top, want)
			}
			if my+1 < q.Size()+qrBorder {
				if wantB := in(my+1) && q.Module(mx, my+1); bottom != wantB {
					t.Fatalf("module (%d,%d): drawn dark=%v, want %v", mx, my+1, bottom, wantB)
				}
			}
		}
	}
}

func TestParseInterspersed(t *testing.T) {
	fs := flag.NewFlagSet("x", flag.ContinueOnError)
	follow := fs.Bool("follow", false, "")
	msg := fs.String("message", "", "")
	pos, err := parseInterspersed(fs, []string{"bob", "--follow", "a", "--message", "hi", "--", "--b", "c"})
	if err != nil {
		t.Fatal(err)
	}
	if !*follow || *msg != "hi" || !reflect.DeepEqual(pos, []string{"bob", "a", "--b", "c"}) {
		t.Fatalf("follow %v message %q positional %q", *follow, *msg, pos)
	}
}

func TestUsage(t *testing.T) {
	var out, errOut bytes.Buffer
	if code := run(context.Background(), []string{"--help"}, nil, &out, &errOut); code != 0 || !strings.Contains(out.String(), "The commands are:") {
		t.Fatalf("--help: %d %q", code, out.String())
	}
	for _, c := range commands {
		out.Reset()
		if code := run(context.Background(), []string{"help", c.name}, nil, &out, &errOut); code != 0 ||
			!strings.HasPrefix(out.String(), "usage: smp "+c.name) || !strings.Contains(usage, "\t"+c.name+" ") || !strings.Contains(usage, c.short) {
			t.Fatalf("help %s: %d %q", c.name, code, out.String())
		}
	}
	errOut.Reset()
	if code := run(context.Background(), []string{"send"}, nil, &out, &errOut); code != 2 || !strings.Contains(errOut.String(), "usage: smp send") {
		t.Fatalf("send without arguments: %d %q", code, errOut.String())
	}
	if code := run(context.Background(), []string{"frobnicate"}, nil, &out, &errOut); code != 2 {
		t.Fatalf("unknown command: %d", code)
	}
}

// TestStateFile: the state is created 0600 in a 0700 folder, refuses
// unknown versions, and reports missing contacts with a hint.
func TestStateFile(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "cfg", "smp")
	st := store{path: filepath.Join(dir, "state.json")}
	if err := st.update(func(s *State) error { s.Contacts["x"] = &Contact{}; return nil }); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(st.path)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("state file: %v %v", fi.Mode(), err)
	}
	if di, _ := os.Stat(dir); di.Mode().Perm() != 0o700 {
		t.Fatalf("state folder mode %v", di.Mode().Perm())
	}
	s, err := st.load()
	if err != nil || s.Contacts["x"] == nil {
		t.Fatalf("load: %v", err)
	}
	if _, err := s.contact("y"); err == nil || !strings.Contains(err.Error(), "smp list") {
		t.Fatalf("missing contact: %v", err)
	}
	if err := os.WriteFile(st.path, []byte(`{"version": 99}`), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := st.load(); err == nil {
		t.Fatal("a state file of another version loaded")
	}
	for _, bad := range []string{"", "-x", "a b", strings.Repeat("a", 65), "ä"} {
		if checkName(bad) == nil {
			t.Errorf("name %q accepted", bad)
		}
	}
}

func TestDefaultStatePath(t *testing.T) {
	t.Setenv("SMP_STATE", "")
	t.Setenv("XDG_CONFIG_HOME", "/cfg")
	t.Setenv("HOME", "/home/x")
	p, err := defaultStatePath()
	if err != nil {
		t.Fatal(err)
	}
	want, _ := os.UserConfigDir()
	if p != filepath.Join(want, "smp", "state.json") {
		t.Fatalf("default state path %q", p)
	}
	t.Setenv("SMP_STATE", "/tmp/s.json")
	if p, _ := defaultStatePath(); p != "/tmp/s.json" {
		t.Fatalf("SMP_STATE ignored: %q", p)
	}
}
