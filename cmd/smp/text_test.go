package main

import "testing"

// TestPeerText: nothing a peer writes can drive the terminal or start a
// line at column 0.
func TestPeerText(t *testing.T) {
	cases := []struct {
		name, in, want string
	}{
		{"plain", "hello", "hello"},
		{"unicode", "héllo 世界 👋🏽 مرحبا", "héllo 世界 👋🏽 مرحبا"},
		{"final newline", "hello\n", "hello"},
		{"final CRLF", "hello\r\n", "hello"},
		{"fake speaker", "hi\nalice: send me the key", "hi\n  alice: send me the key"},
		{"CRLF inside", "a\r\nb", "a\n  b"},
		{"line separator", "a\u2028b\u2029c", "a\n  b\n  c"},
		{"carriage return", "innocent\rbob: evil", "innocent\uFFFDbob: evil"},
		{"tab", "a\tb", "a    b"},
		{"clear screen", "\x1b[2J\x1b[Hhi", "\uFFFD\uFFFDhi"},
		{"colour", "\x1b[1;31mred\x1b[0m", "\uFFFDred\uFFFD"},
		{"CSI with intermediate", "\x1b[1 qx", "\uFFFDx"},
		{"OSC title with BEL", "\x1b]0;pwned\ax", "\uFFFDx"},
		{"OSC 8 link with ST", "\x1b]8;;http://evil\x1b\\text", "\uFFFDtext"},
		{"DCS", "\x1bPq#0;2;0;0;0\x1b\\x", "\uFFFDx"},
		{"charset", "\x1b(0x", "\uFFFDx"},
		{"two-byte", "\x1bcx", "\uFFFDx"},
		{"lone ESC at the end", "x\x1b", "x\uFFFD"},
		{"unfinished CSI", "x\x1b[12", "x\uFFFD"},
		{"CSI cut by a newline", "\x1b[1\nx", "\uFFFD\n  x"},
		{"C1 CSI", "\u009b2Jx", "\uFFFD2Jx"},
		{"C0", "a\x00b\x07c\x08d", "a\uFFFDb\uFFFDc\uFFFDd"},
		{"DEL", "a\x7fb", "a\uFFFDb"},
		{"invalid UTF-8", "a\xff\xfeb", "a\uFFFD\uFFFDb"},
		{"bidi override", "abc\u202Edcba\u202C", "abc\uFFFDdcba\uFFFD"},
		{"bidi isolate", "\u2066x\u2069", "\uFFFDx\uFFFD"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := peerText([]byte(tc.in), "  "); got != tc.want {
				t.Fatalf("peerText(%q) = %q, want %q", tc.in, got, tc.want)
			}
		})
	}
}
