package codec

import (
	"encoding/base64"
	"encoding/hex"
	"errors"
	"strings"
	"testing"
)

// vectors.md §5.
const (
	vecTypedKeyHex = "028520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a"
	vecTypedKeyB64 = "AoUg8AmJMKdUdIt93LQ+91oNvzoNJjga9OukqY6qm05q"
	vecFingerprint = "VlJ8/8GyjK16/MCwIiQJ5oDnwyh2ddn7IdkGORC1jYc="
	vecSID         = "AQIDBAUGBwgJCgsMDQ4PEA=="
	vecURI         = "smp://VlJ8_8GyjK16_MCwIiQJ5oDnwyh2ddn7IdkGORC1jYc@relay.example:5223/AQIDBAUGBwgJCgsMDQ4PEA#AoUg8AmJMKdUdIt93LQ-91oNvzoNJjga9OukqY6qm05q"
)

func vectorInvitation(t *testing.T) Invitation {
	t.Helper()
	typed, err := hex.DecodeString(vecTypedKeyHex)
	if err != nil {
		t.Fatal(err)
	}
	if got := base64.StdEncoding.EncodeToString(typed); got != vecTypedKeyB64 {
		t.Fatalf("typed key base64 = %s, want %s", got, vecTypedKeyB64)
	}
	if got := Fingerprint(typed); got != vecFingerprint {
		t.Fatalf("Fingerprint = %s, want %s", got, vecFingerprint)
	}
	ek, err := ParseKEMPublicKey(typed)
	if err != nil {
		t.Fatal(err)
	}
	sid, _ := base64.StdEncoding.DecodeString(vecSID)
	return Invitation{EncryptionKey: ek, SenderID: sid, Host: "relay.example", Port: 5223, ServerKeyHash: vecFingerprint}
}

func TestInvitationVectorURI(t *testing.T) {
	inv := vectorInvitation(t)
	if got := inv.URI(); got != vecURI {
		t.Fatalf("URI:\n got %s\nwant %s", got, vecURI)
	}
	back, err := ParseInvitation(vecURI)
	if err != nil {
		t.Fatal(err)
	}
	if back.URI() != vecURI || back.Text() != inv.Text() || back.Addr() != "relay.example:5223" {
		t.Fatalf("round trip: %+v", back)
	}
}

func TestInvitationVectorText(t *testing.T) {
	inv := vectorInvitation(t)
	want := vecTypedKeyB64 + "\r\n" + vecSID + "\r\nrelay.example:5223\r\n" + vecFingerprint
	if got := inv.Text(); got != want {
		t.Fatalf("Text:\n got %q\nwant %q", got, want)
	}
	for _, in := range []string{want, want + "\r\n", strings.ReplaceAll(want, "\r\n", "\n"), "  " + want + "\n"} {
		back, err := ParseInvitation(in)
		if err != nil {
			t.Fatalf("ParseInvitation(%q): %v", in, err)
		}
		if back.URI() != vecURI {
			t.Fatalf("ParseInvitation(%q).URI() = %s", in, back.URI())
		}
	}
}

func TestInvitationServerForms(t *testing.T) {
	cases := []struct {
		server, host string
		port         uint16
		addr         string
	}{
		{"relay.example", "relay.example", 0, "relay.example:5223"},
		{"127.0.0.1:40000", "127.0.0.1", 40000, "127.0.0.1:40000"},
		{"[::1]:5224", "::1", 5224, "[::1]:5224"},
		{"[2001:db8::2]", "2001:db8::2", 0, "[2001:db8::2]:5223"},
		{"a-b.c1", "a-b.c1", 0, "a-b.c1:5223"},
		// An onion service (v3: 56 base32 characters), as a relay run
		// behind Tor is named.
		{"abcdefghijklmnopqrstuvwxyzabcdefghijklmnopqrstuvwxyz234567.onion:5223",
			"abcdefghijklmnopqrstuvwxyzabcdefghijklmnopqrstuvwxyz234567.onion", 5223,
			"abcdefghijklmnopqrstuvwxyzabcdefghijklmnopqrstuvwxyz234567.onion:5223"},
	}
	for _, c := range cases {
		text := vecTypedKeyB64 + "\r\n" + vecSID + "\r\n" + c.server + "\r\n" + vecFingerprint
		got, err := ParseInvitationText(text)
		if err != nil {
			t.Fatalf("%s: %v", c.server, err)
		}
		if got.Host != c.host || got.Port != c.port || got.Addr() != c.addr {
			t.Fatalf("%s: host %q port %d addr %q", c.server, got.Host, got.Port, got.Addr())
		}
		if got.Text() != text {
			t.Fatalf("%s: text does not round-trip: %q", c.server, got.Text())
		}
		again, err := ParseInvitationURI(got.URI())
		if err != nil || again.Text() != text {
			t.Fatalf("%s: URI %s does not round-trip: %v", c.server, got.URI(), err)
		}
	}
}

func TestInvitationRejects(t *testing.T) {
	good := strings.SplitN(vecURI, "@", 2)
	rest := good[1]
	cases := map[string]string{
		"empty":             "",
		"no scheme":         "VlJ8@relay.example/AQID#Ao",
		"other scheme":      "http://" + strings.TrimPrefix(vecURI, "smp://"),
		"no fragment":       strings.Split(vecURI, "#")[0],
		"no path":           "smp://" + strings.TrimPrefix(good[0], "smp://") + "@relay.example#AoUg",
		"no at":             "smp://relay.example:5223/AQIDBAUGBwgJCgsMDQ4PEA#AoUg8AmJMKdUdIt93LQ-91oNvzoNJjga9OukqY6qm05q",
		"padded fp":         strings.Replace(vecURI, "jYc@", "jYc=@", 1),
		"std alphabet":      strings.Replace(vecURI, "8_8G", "8/8G", 1),
		"short sid":         strings.Replace(vecURI, "/AQIDBAUGBwgJCgsMDQ4PEA#", "/AQIDBAUGBwgJCgsMDQ4P#", 1),
		"short fp":          "smp://VlJ8_8Gy@" + rest,
		"bad key type":      strings.Replace(vecURI, "#AoUg", "#BYUg", 1),
		"truncated key":     strings.TrimSuffix(vecURI, "05q"),
		"port 0":            strings.Replace(vecURI, ":5223", ":0", 1),
		"port too big":      strings.Replace(vecURI, ":5223", ":65536", 1),
		"port leading zero": strings.Replace(vecURI, ":5223", ":05223", 1),
		"empty port":        strings.Replace(vecURI, ":5223", ":", 1),
		"bad host":          strings.Replace(vecURI, "relay.example", "relay_example", 1),
		"hyphen host":       strings.Replace(vecURI, "relay.example", "-relay.example", 1),
		"bare ipv6":         strings.Replace(vecURI, "relay.example:5223", "::1", 1),
		"query":             vecURI + "?x=1",
		"text 3 lines":      vecTypedKeyB64 + "\r\n" + vecSID + "\r\nrelay.example",
		"text bad b64":      vecTypedKeyB64 + "\r\n" + "AQIDBAUGBwgJCgsMDQ4PEA" + "\r\nrelay.example\r\n" + vecFingerprint,
		"text url b64":      strings.ReplaceAll(vecTypedKeyB64, "+", "-") + "\r\n" + vecSID + "\r\nrelay.example\r\n" + vecFingerprint,
	}
	zeroEK := base64.RawURLEncoding.EncodeToString(append([]byte{byte(KEMX25519)}, make([]byte, 32)...))
	cases["all-zero x25519 key"] = strings.Split(vecURI, "#")[0] + "#" + zeroEK
	for name, in := range cases {
		if inv, err := ParseInvitation(in); err == nil {
			t.Errorf("%s: ParseInvitation(%q) = %s, want an error", name, in, inv.URI())
		} else if !errors.Is(err, ErrInvitation) {
			t.Errorf("%s: error %v does not wrap ErrInvitation", name, err)
		}
	}
}

func TestInvitationEveryKEMType(t *testing.T) {
	for _, kt := range []KEMType{KEMRSA, KEMX25519, KEMMLKEM768X25519} {
		k, err := GenerateKEMKey(kt)
		if err != nil {
			t.Fatal(err)
		}
		inv := Invitation{EncryptionKey: k.Public(), SenderID: make([]byte, QueueIDSize), Host: "127.0.0.1", Port: 5223,
			ServerKeyHash: k.Public().Fingerprint()}
		for _, s := range []string{inv.URI(), inv.Text()} {
			back, err := ParseInvitation(s)
			if err != nil {
				t.Fatalf("%v: %v", kt, err)
			}
			if back.EncryptionKey.Type() != kt || back.URI() != inv.URI() {
				t.Fatalf("%v: round trip changed the invitation", kt)
			}
		}
	}
}
