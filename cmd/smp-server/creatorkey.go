package main

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"

	"github.com/smprelay/smprelay/codec"
)

// creatorKeyRSABits is the size of an RSA creator key: SPEC §2 allows
// 2048–4096 bits; 3072 is NIST's 128-bit level, what Ed25519 gives.
const creatorKeyRSABits = 3072

// creatorKeyCmd is "smp-server creator-key new [--type ed25519|rsa] --out
// FILE": it makes a creator key pair (SPEC §5), writes the private key to
// FILE as PKCS #8 PEM (0600; an existing file is never overwritten) for the
// user who will sign NEW with it, and prints the public key's line for the
// relay's creator-keys file (base64 of its SubjectPublicKeyInfo DER, the
// SPEC §2 encoding). Exit status: 0 done, 1 the key could not be written, 2
// a bad command line.
func creatorKeyCmd(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] != "new" {
		fmt.Fprintln(stderr, "Usage: smp-server creator-key new [--type ed25519|rsa] --out FILE")
		return 2
	}
	fl := flag.NewFlagSet("smp-server creator-key new", flag.ContinueOnError)
	fl.SetOutput(stderr)
	typ := fl.String("type", "ed25519", "key type: ed25519 or rsa (3072 bits)")
	out := fl.String("out", "", "file the private key is written to (PEM, mode 0600); must not exist")
	if err := fl.Parse(args[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fl.NArg() > 0 || *out == "" {
		fmt.Fprintln(stderr, "smp-server creator-key new: --out FILE is required, and nothing else after the flags")
		return 2
	}
	var priv any
	switch *typ {
	case "ed25519":
		_, k, err := ed25519.GenerateKey(rand.Reader)
		if err != nil {
			fmt.Fprintf(stderr, "smp-server creator-key new: %v\n", err)
			return 1
		}
		priv = k
	case "rsa":
		k, err := rsa.GenerateKey(rand.Reader, creatorKeyRSABits)
		if err != nil {
			fmt.Fprintf(stderr, "smp-server creator-key new: %v\n", err)
			return 1
		}
		priv = k
	default:
		fmt.Fprintf(stderr, "smp-server creator-key new: --type %q: must be ed25519 or rsa\n", *typ)
		return 2
	}
	s, err := signerFromKey(priv)
	if err != nil {
		fmt.Fprintf(stderr, "smp-server creator-key new: %v\n", err)
		return 1
	}
	der, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		fmt.Fprintf(stderr, "smp-server creator-key new: %v\n", err)
		return 1
	}
	f, err := os.OpenFile(*out, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		fmt.Fprintf(stderr, "smp-server creator-key new: %v (an existing key file is never overwritten)\n", err)
		return 1
	}
	_, werr := f.Write(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}))
	if err := errors.Join(werr, f.Sync(), f.Close()); err != nil {
		os.Remove(*out)
		fmt.Fprintf(stderr, "smp-server creator-key new: writing %s: %v\n", *out, err)
		return 1
	}
	fmt.Fprintln(stdout, base64.StdEncoding.EncodeToString(s.PublicSPKI()))
	return 0
}

// signerFromKey wraps a generated private key, checking that its public key
// is one SPEC §2 accepts (the relay parses it the same way).
func signerFromKey(priv any) (*codec.Signer, error) {
	switch k := priv.(type) {
	case ed25519.PrivateKey:
		return codec.NewSigner(k)
	case *rsa.PrivateKey:
		return codec.NewSigner(k)
	}
	return nil, fmt.Errorf("unsupported key %T", priv)
}
