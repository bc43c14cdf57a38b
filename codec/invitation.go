package codec

import (
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"

	"github.com/smprelay/smprelay/internal/errwrap"
)

// DefaultPort is the SMP server port an invitation implies when it names none
// (SPEC §3, §9).
const DefaultPort = 5223

// URIScheme is the scheme of the URI form of an invitation (SPEC §9).
const URIScheme = "smp"

// ErrInvitation reports text that is not an invitation (SPEC §9). It is
// returned wrapped with the reason.
var ErrInvitation = errors.New("codec: malformed invitation")

// Invitation is the out-of-band message a recipient gives a sender (SPEC §9):
// the queue's encryption key EK, its sender ID, and the server with the
// fingerprint of its transport key. Parsed values are checked: EK is a valid
// typed KEM key, SenderID has QueueIDSize bytes, ServerKeyHash is a SHA-256
// fingerprint and Host is a hostname or an IP address.
//
// It has two printed forms. Text, CRLF-separated, as in the seed:
//
//	encryptionKey CRLF senderId CRLF host[:port] CRLF serverKeyHash
//
// and URI, for links and QR codes, with base64url without padding:
//
//	smp://<serverKeyHash>@<host>[:<port>]/<senderId>#<encryptionKey>
//
// Values are not safe for concurrent mutation; EncryptionKey is immutable.
type Invitation struct {
	EncryptionKey *KEMPublicKey // EK, typed (SPEC §2)
	SenderID      []byte        // SID
	Host          string        // hostname, IPv4 address or IPv6 address (without brackets)
	Port          uint16        // 0: none given, which means DefaultPort
	ServerKeyHash string        // fingerprint of the server transport key, standard base64 as Fingerprint returns
}

// Addr returns host:port for dialing, with DefaultPort when Port is 0 and
// brackets around an IPv6 address.
func (inv *Invitation) Addr() string {
	port := inv.Port
	if port == 0 {
		port = DefaultPort
	}
	return net.JoinHostPort(inv.Host, strconv.Itoa(int(port)))
}

// server returns host[:port] as the invitation prints it.
func (inv *Invitation) server() string {
	h := inv.Host
	if strings.IndexByte(h, ':') >= 0 {
		h = "[" + h + "]"
	}
	if inv.Port == 0 {
		return h
	}
	return h + ":" + strconv.Itoa(int(inv.Port))
}

// Text returns the text form (SPEC §9): four CRLF-separated lines, no
// trailing CRLF.
func (inv *Invitation) Text() string {
	var b strings.Builder
	b.WriteString(base64.StdEncoding.EncodeToString(inv.EncryptionKey.Bytes()))
	b.WriteString("\r\n")
	b.WriteString(base64.StdEncoding.EncodeToString(inv.SenderID))
	b.WriteString("\r\n")
	b.WriteString(inv.server())
	b.WriteString("\r\n")
	b.WriteString(inv.ServerKeyHash)
	return b.String()
}

// URI returns the URI form (SPEC §9). The fingerprint is re-encoded from
// standard base64 to base64url without padding.
func (inv *Invitation) URI() string {
	fp, _ := base64.StdEncoding.DecodeString(inv.ServerKeyHash) // checked by the parsers
	var b strings.Builder
	b.WriteString(URIScheme + "://")
	b.WriteString(base64.RawURLEncoding.EncodeToString(fp))
	b.WriteByte('@')
	b.WriteString(inv.server())
	b.WriteByte('/')
	b.WriteString(base64.RawURLEncoding.EncodeToString(inv.SenderID))
	b.WriteByte('#')
	b.WriteString(base64.RawURLEncoding.EncodeToString(inv.EncryptionKey.Bytes()))
	return b.String()
}

// String returns the URI form.
func (inv *Invitation) String() string { return inv.URI() }

// ParseInvitation parses either form: the URI form when s begins with
// "smp://" (scheme in any case), the text form otherwise. Leading and
// trailing white space is ignored, so text pasted with a final newline parses.
func ParseInvitation(s string) (Invitation, error) {
	s = strings.TrimSpace(s)
	if len(s) >= len(URIScheme)+3 && strings.EqualFold(s[:len(URIScheme)+3], URIScheme+"://") {
		return ParseInvitationURI(s)
	}
	return ParseInvitationText(s)
}

// ParseInvitationText parses the text form. Lines end with CRLF; a bare LF is
// accepted too, since text passed through other channels often loses the CR.
func ParseInvitationText(s string) (Invitation, error) {
	lines := strings.Split(s, "\n")
	if len(lines) != 4 {
		return Invitation{}, fmt.Errorf("%w: text form has %d lines, want 4", ErrInvitation, len(lines))
	}
	for i := range 3 {
		lines[i] = strings.TrimSuffix(lines[i], "\r")
	}
	ek, err := decodeStd(lines[0])
	if err != nil {
		return Invitation{}, fmt.Errorf("%w: encryption key: %v", ErrInvitation, err)
	}
	sid, err := decodeStd(lines[1])
	if err != nil {
		return Invitation{}, fmt.Errorf("%w: sender ID: %v", ErrInvitation, err)
	}
	fp, err := decodeStd(lines[3])
	if err != nil {
		return Invitation{}, fmt.Errorf("%w: server key hash: %v", ErrInvitation, err)
	}
	return newInvitation(ek, sid, lines[2], fp)
}

// ParseInvitationURI parses the URI form. Nothing may follow the encryption
// key: no query, and no padding.
func ParseInvitationURI(s string) (Invitation, error) {
	prefix := URIScheme + "://"
	if len(s) < len(prefix) || !strings.EqualFold(s[:len(prefix)], prefix) {
		return Invitation{}, fmt.Errorf("%w: URI does not begin with %q", ErrInvitation, prefix)
	}
	rest := s[len(prefix):]
	rest, ekText, ok := strings.Cut(rest, "#")
	if !ok {
		return Invitation{}, fmt.Errorf("%w: URI has no #encryptionKey", ErrInvitation)
	}
	authority, sidText, ok := strings.Cut(rest, "/")
	if !ok {
		return Invitation{}, fmt.Errorf("%w: URI has no /senderId", ErrInvitation)
	}
	fpText, server, ok := strings.Cut(authority, "@")
	if !ok {
		return Invitation{}, fmt.Errorf("%w: URI has no serverKeyHash@", ErrInvitation)
	}
	fp, err := decodeURL(fpText)
	if err != nil {
		return Invitation{}, fmt.Errorf("%w: server key hash: %v", ErrInvitation, err)
	}
	sid, err := decodeURL(sidText)
	if err != nil {
		return Invitation{}, fmt.Errorf("%w: sender ID: %v", ErrInvitation, err)
	}
	ek, err := decodeURL(ekText)
	if err != nil {
		return Invitation{}, fmt.Errorf("%w: encryption key: %v", ErrInvitation, err)
	}
	return newInvitation(ek, sid, server, fp)
}

// newInvitation checks decoded fields and builds the value.
func newInvitation(ek, sid []byte, server string, fp []byte) (Invitation, error) {
	key, err := ParseKEMPublicKey(ek)
	if err != nil {
		return Invitation{}, errwrap.Wrap(fmt.Errorf("%w: encryption key", ErrInvitation), err)
	}
	if len(sid) != QueueIDSize {
		return Invitation{}, fmt.Errorf("%w: sender ID has %d bytes, want %d", ErrInvitation, len(sid), QueueIDSize)
	}
	if len(fp) != sha256.Size {
		return Invitation{}, fmt.Errorf("%w: server key hash has %d bytes, want %d", ErrInvitation, len(fp), sha256.Size)
	}
	host, port, err := ParseServer(server)
	if err != nil {
		return Invitation{}, fmt.Errorf("%w: %w", ErrInvitation, err)
	}
	return Invitation{
		EncryptionKey: key,
		SenderID:      sid,
		Host:          host,
		Port:          port,
		ServerKeyHash: base64.StdEncoding.EncodeToString(fp),
	}, nil
}

// ParseServer parses host[:port] (SPEC §9): an RFC 1123 hostname, an IPv4
// address or a bracketed IPv6 address, and an optional port 1–65535. The
// returned port is 0 when none is given; the host has no brackets.
func ParseServer(s string) (host string, port uint16, err error) {
	hostPart, portPart := s, ""
	if strings.HasPrefix(s, "[") {
		end := strings.IndexByte(s, ']')
		if end < 0 {
			return "", 0, fmt.Errorf("server %q: unclosed [", s)
		}
		hostPart, portPart = s[1:end], s[end+1:]
		addr, perr := netip.ParseAddr(hostPart)
		if perr != nil || !addr.Is6() || addr.Zone() != "" {
			return "", 0, fmt.Errorf("server %q: not an IPv6 address in brackets", s)
		}
		if portPart != "" && portPart[0] != ':' {
			return "", 0, fmt.Errorf("server %q: junk after ]", s)
		}
	} else if i := strings.LastIndexByte(s, ':'); i >= 0 {
		hostPart, portPart = s[:i], s[i:]
		if !validHostname(hostPart) {
			return "", 0, fmt.Errorf("server %q: host is not a hostname or IPv4 address (IPv6 needs brackets)", s)
		}
	} else if !validHostname(hostPart) {
		return "", 0, fmt.Errorf("server %q: not a hostname or IP address", s)
	}
	if portPart != "" {
		p := portPart[1:]
		n, perr := strconv.ParseUint(p, 10, 16)
		if perr != nil || n == 0 || p[0] == '+' || (len(p) > 1 && p[0] == '0') {
			return "", 0, fmt.Errorf("server %q: port %q is not 1..65535", s, p)
		}
		port = uint16(n)
	}
	return hostPart, port, nil
}

// validHostname accepts an RFC 1123 hostname (labels of letters, digits and
// hyphens, not starting or ending with a hyphen, at most 63 bytes each and 253
// in all). Dotted IPv4 addresses are hostnames by this rule.
func validHostname(h string) bool {
	if len(h) == 0 || len(h) > 253 {
		return false
	}
	for label := range strings.SplitSeq(h, ".") {
		if len(label) == 0 || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-') {
				return false
			}
		}
	}
	return true
}

// decodeStd decodes strict, padded standard base64. Go's decoder skips CR and
// LF, so the alphabet is checked first.
func decodeStd(s string) ([]byte, error) {
	for i := 0; i < len(s); i++ {
		if c := s[i]; !isB64(c) && c != '=' {
			return nil, fmt.Errorf("byte %q is not standard base64", c)
		}
	}
	b, err := base64.StdEncoding.Strict().DecodeString(s)
	if err != nil {
		return nil, err
	}
	if len(b) == 0 {
		return nil, errors.New("empty")
	}
	return b, nil
}

// decodeURL decodes strict base64url without padding.
func decodeURL(s string) ([]byte, error) {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			return nil, fmt.Errorf("byte %q is not base64url without padding", c)
		}
	}
	b, err := base64.RawURLEncoding.Strict().DecodeString(s)
	if err != nil {
		return nil, err
	}
	if len(b) == 0 {
		return nil, errors.New("empty")
	}
	return b, nil
}
