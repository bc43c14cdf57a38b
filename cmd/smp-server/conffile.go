package main

import (
	"fmt"
	"strconv"
	"strings"
	"unicode/utf8"
)

// The config file is a flat subset of TOML, parsed here rather than with a
// TOML library because it needs no tables, arrays, floats or dates and its
// errors should name the line:
//
//	# a comment, to the end of the line
//	key = "a string"      # basic string: escapes \" \\ \t \n \r \uXXXX
//	key = 'a literal'     # literal string: no escapes
//	key = 128             # integer, optionally signed, _ between digits
//
// Keys are the flag names (lower case, digits, '-'); each may appear once.
// Durations are strings in Go syntax ("30s", "504h"). Blank lines are
// ignored; anything else (tables, arrays, booleans) is an error naming the
// line.

// entry is one "key = value" line of a config file.
type entry struct {
	key    string
	value  string // the string's contents, or the integer's digits
	quoted bool   // value was a string
	line   int    // 1-based
}

// parseConfig parses a config file's text. path only labels errors.
func parseConfig(path string, text []byte) ([]entry, error) {
	if !utf8.Valid(text) {
		return nil, fmt.Errorf("%s: not UTF-8 text", path)
	}
	var out []entry
	seen := make(map[string]int)
	for i, line := range strings.Split(string(text), "\n") {
		n := i + 1
		e, ok, err := parseLine(strings.TrimSuffix(line, "\r"))
		if err != nil {
			return nil, fmt.Errorf("%s:%d: %w", path, n, err)
		}
		if !ok {
			continue
		}
		if first, dup := seen[e.key]; dup {
			return nil, fmt.Errorf("%s:%d: %s is already set on line %d", path, n, e.key, first)
		}
		seen[e.key] = n
		e.line = n
		out = append(out, e)
	}
	return out, nil
}

// parseLine parses one line; ok is false for a blank or comment line.
func parseLine(s string) (e entry, ok bool, err error) {
	s = strings.TrimLeft(s, " \t")
	if s == "" || s[0] == '#' {
		return e, false, nil
	}
	if s[0] == '[' {
		return e, false, fmt.Errorf("tables ([...]) are not supported: every option is a top-level key")
	}
	k := 0
	for k < len(s) && isKeyByte(s[k]) {
		k++
	}
	if k == 0 {
		return e, false, fmt.Errorf("expected key = value, found %q", clip(s))
	}
	e.key = s[:k]
	rest := strings.TrimLeft(s[k:], " \t")
	if rest == "" || rest[0] != '=' {
		return e, false, fmt.Errorf("expected = after %s", e.key)
	}
	rest = strings.TrimLeft(rest[1:], " \t")
	var used int
	switch {
	case rest == "":
		return e, false, fmt.Errorf("%s has no value", e.key)
	case rest[0] == '"':
		e.value, used, err = basicString(rest)
		e.quoted = true
	case rest[0] == '\'':
		end := strings.IndexByte(rest[1:], '\'')
		if end < 0 {
			return e, false, fmt.Errorf("%s: unterminated string", e.key)
		}
		e.value, used, e.quoted = rest[1:1+end], end+2, true
	default:
		e.value, used, err = integer(rest)
	}
	if err != nil {
		return e, false, fmt.Errorf("%s: %w", e.key, err)
	}
	tail := strings.TrimLeft(rest[used:], " \t")
	if tail != "" && tail[0] != '#' {
		return e, false, fmt.Errorf("%s: unexpected %q after the value", e.key, clip(tail))
	}
	return e, true, nil
}

func isKeyByte(b byte) bool {
	return b >= 'a' && b <= 'z' || b >= 'A' && b <= 'Z' || b >= '0' && b <= '9' || b == '-' || b == '_'
}

// basicString reads a double-quoted string at the start of s and returns its
// contents and the bytes it took.
func basicString(s string) (string, int, error) {
	var b strings.Builder
	for i := 1; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '"':
			return b.String(), i + 1, nil
		case c == '\\':
			if i+1 >= len(s) {
				return "", 0, fmt.Errorf("unterminated string")
			}
			i++
			switch s[i] {
			case '"', '\\':
				b.WriteByte(s[i])
			case 't':
				b.WriteByte('\t')
			case 'n':
				b.WriteByte('\n')
			case 'r':
				b.WriteByte('\r')
			case 'u':
				if i+4 >= len(s) {
					return "", 0, fmt.Errorf("short \\u escape")
				}
				r, err := strconv.ParseUint(s[i+1:i+5], 16, 32)
				if err != nil || !utf8.ValidRune(rune(r)) {
					return "", 0, fmt.Errorf("bad \\u escape %q", s[i-1:i+5])
				}
				b.WriteRune(rune(r))
				i += 4
			default:
				return "", 0, fmt.Errorf("unsupported escape \\%c (use \\\" \\\\ \\t \\n \\r or \\uXXXX)", s[i])
			}
		case c < 0x20 && c != '\t':
			return "", 0, fmt.Errorf("control character in string")
		default:
			b.WriteByte(c)
		}
	}
	return "", 0, fmt.Errorf("unterminated string")
}

// integer reads an unquoted integer at the start of s: an optional sign, then
// digits with single underscores between them (TOML), which are dropped.
func integer(s string) (string, int, error) {
	i := 0
	if i < len(s) && (s[i] == '+' || s[i] == '-') {
		i++
	}
	start := i
	var b strings.Builder
	b.WriteString(s[:start])
	for i < len(s) {
		c := s[i]
		if c >= '0' && c <= '9' {
			b.WriteByte(c)
		} else if c != '_' || i == start || i+1 >= len(s) || s[i-1] == '_' || s[i+1] < '0' || s[i+1] > '9' {
			break
		}
		i++
	}
	if i == start {
		return "", 0, fmt.Errorf("value %q is neither a quoted string nor an integer (strings and durations are quoted: \"30s\")", clip(s))
	}
	if i < len(s) && s[i] != ' ' && s[i] != '\t' && s[i] != '#' {
		return "", 0, fmt.Errorf("value %q is neither a quoted string nor an integer (strings and durations are quoted: \"30s\")", clip(s))
	}
	return b.String(), i, nil
}

// quote writes v as a basic string that parseConfig reads back as v.
func quote(v string) string {
	var b strings.Builder
	b.WriteByte('"')
	for _, r := range v {
		switch {
		case r == '"' || r == '\\':
			b.WriteByte('\\')
			b.WriteRune(r)
		case r == '\t':
			b.WriteString(`\t`)
		case r == '\n':
			b.WriteString(`\n`)
		case r == '\r':
			b.WriteString(`\r`)
		case r < 0x20 || r == 0x7f:
			fmt.Fprintf(&b, `\u%04x`, r)
		default:
			b.WriteRune(r)
		}
	}
	b.WriteByte('"')
	return b.String()
}

// clip shortens s for an error message.
func clip(s string) string {
	if len(s) > 40 {
		return s[:40] + "..."
	}
	return s
}
