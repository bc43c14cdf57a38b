package main

import (
	"strings"
	"unicode/utf8"
)

// replacement stands for whatever peerText does not let through.
const replacement = "\uFFFD"

// peerText renders text that someone else chose — a message body, a
// confirmation's note, anything the relay sent — for a terminal, so that it
// can neither drive the terminal nor pass for output of smp's own:
//
//   - an escape sequence (ESC and what it introduces: CSI, OSC, DCS …) and
//     every other control character (C0 but tab and newline, DEL, C1),
//     invalid UTF-8 and the bidirectional embeddings, overrides and isolates
//     (U+202A–U+202E, U+2066–U+2069) become one U+FFFD each;
//   - a tab becomes four spaces;
//   - a newline (CRLF, U+2028 or U+2029 too) starts a new line that begins
//     with indent, so no line of the text starts at column 0 where a new
//     message or a "NAME:" line would; one final newline is dropped.
//
// Printable Unicode, emoji and right-to-left scripts pass unchanged.
func peerText(b []byte, indent string) string {
	s := string(b)
	if t, ok := strings.CutSuffix(s, "\n"); ok {
		s, _ = strings.CutSuffix(t, "\r")
	}
	var out strings.Builder
	for i := 0; i < len(s); {
		r, n := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && n == 1:
			out.WriteString(replacement)
		case r == '\x1b':
			n = escapeLen(s[i:])
			out.WriteString(replacement)
		case r == '\r' && strings.HasPrefix(s[i+1:], "\n"):
			n = 2
			out.WriteString("\n" + indent)
		case r == '\n', r == '\u2028', r == '\u2029':
			out.WriteString("\n" + indent)
		case r == '\t':
			out.WriteString("    ")
		case r < 0x20, r >= 0x7f && r < 0xa0, r >= 0x202a && r <= 0x202e, r >= 0x2066 && r <= 0x2069:
			out.WriteString(replacement)
		default:
			out.WriteString(s[i : i+n])
		}
		i += n
	}
	return out.String()
}

// escapeLen returns the length of the escape sequence at the start of s,
// which begins with ESC (ECMA-48 §5.3): a control string (OSC, DCS, SOS, PM,
// APC) runs to BEL or ST, a CSI to its final byte, anything else to its
// first byte in 0x30–0x7E. An unfinished sequence runs to the end of s.
func escapeLen(s string) int {
	if len(s) < 2 {
		return len(s)
	}
	switch s[1] {
	case ']', 'P', 'X', '^', '_':
		for i := 2; i < len(s); i++ {
			switch {
			case s[i] == '\a':
				return i + 1
			case s[i] == '\x1b' && i+1 < len(s) && s[i+1] == '\\':
				return i + 2
			}
		}
		return len(s)
	case '[':
		for i := 2; i < len(s); i++ {
			if s[i] >= 0x40 && s[i] <= 0x7e {
				return i + 1
			}
			if s[i] < 0x20 || s[i] > 0x3f {
				return i // not a CSI byte: the sequence ends before it
			}
		}
		return len(s)
	}
	for i := 1; i < len(s); i++ {
		if s[i] >= 0x30 && s[i] <= 0x7e {
			return i + 1
		}
		if s[i] < 0x20 || s[i] > 0x2f {
			return i
		}
	}
	return len(s)
}
