package main

import (
	"bytes"
	"strings"
	"testing"

	"github.com/smprelay/smprelay/internal/smptest"
)

// TestContactsScenario runs the contacts scenario briefly on 1 and 2
// relays: every point delivers, nothing is missing, and the second relay
// costs the clients twice the blocks.
func TestContactsScenario(t *testing.T) {
	out := t.TempDir()
	var stdout, stderr bytes.Buffer
	args := []string{"--scenarios", "contacts", "--contact-relays", "1,2", "--contact-duration", "500ms", "--contact-warmup", "100ms",
		"--pin=false", "--server-bin", smptest.BuildServer(t), "--out", out}
	if code := run(args, &stdout, &stderr); code != 0 {
		t.Fatalf("run exited %d\nstderr:\n%s", code, stderr.String())
	}
	rep, _, _ := readReport(t, out)
	if rep.Crypto != nil {
		t.Error("the contacts scenario measured the crypto costs, which it does not use")
	}
	c := rep.Contacts
	if c == nil || len(c.Points) != 2 {
		t.Fatalf("contacts: %+v", c)
	}
	for i, p := range c.Points {
		if p.Relays != i+1 || p.Messages == 0 || !(p.Throughput > 0) || !(p.P50Ms > 0) || p.P99Ms < p.P50Ms || p.Missing != 0 ||
			p.BlocksPerMsg != 2*(i+1) || !(p.ServerCPUPerMsg > 0) {
			t.Errorf("point %d: %+v", i, p)
		}
	}
	if !strings.Contains(stdout.String(), "## contacts (one contact on N relays)") {
		t.Errorf("the Markdown has no contacts section:\n%s", stdout.String())
	}
}
