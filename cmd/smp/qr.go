package main

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"strconv"

	goqr "github.com/piglig/go-qr"
)

// qrBorder is the quiet zone around a terminal QR code, in modules. The
// standard asks for 4; 2 is what terminal renderers commonly use and scans
// well, and it saves width on the large codes mlkem768x25519 keys need.
const qrBorder = 2

// encodeQR encodes text at error correction level L, the densest, since an
// invitation with an mlkem768x25519 key (about 1,700 characters) needs a
// version-37 code even so. The encoder raises the level when there is room.
func encodeQR(text string) (*goqr.QrCode, error) {
	q, err := goqr.EncodeText(text, goqr.Low)
	if err != nil {
		return nil, fmt.Errorf("encoding the QR code: %w", err)
	}
	return q, nil
}

// qrColumns is the width of q drawn by drawQR, quiet zone included, in
// character cells.
func qrColumns(q *goqr.QrCode) int { return q.Size() + 2*qrBorder }

// drawQR draws q with Unicode half blocks, two modules per character cell,
// with the quiet zone. Light modules are drawn (as the terminal's
// foreground) and dark ones left blank, which is right for the usual
// light-on-dark terminal.
func drawQR(w io.Writer, q *goqr.QrCode) error {
	size := q.Size()
	dark := func(x, y int) bool {
		return x >= 0 && y >= 0 && x < size && y < size && q.Module(x, y)
	}
	bw := bufio.NewWriter(w)
	for y := -qrBorder; y < size+qrBorder; y += 2 {
		for x := -qrBorder; x < size+qrBorder; x++ {
			top, bottom := dark(x, y), dark(x, y+1) || y+1 >= size+qrBorder
			switch {
			case !top && !bottom:
				bw.WriteString("█")
			case !top && bottom:
				bw.WriteString("▀")
			case top && !bottom:
				bw.WriteString("▄")
			default:
				bw.WriteByte(' ')
			}
		}
		bw.WriteByte('\n')
	}
	return bw.Flush()
}

// writePNG writes text as a QR code in a PNG file (mode 0600: the invitation
// is for one person), 8 pixels a module with the standard 4-module border.
func writePNG(path, text string) error {
	q, err := encodeQR(text)
	if err != nil {
		return err
	}
	b, err := q.ToPNGBytes(goqr.NewQrCodeImgConfig(8, 4))
	if err != nil {
		return fmt.Errorf("drawing the QR code: %w", err)
	}
	if err := os.WriteFile(path, b, 0o600); err != nil {
		return fmt.Errorf("writing the QR code: %w", err)
	}
	return nil
}

// termColumns returns the width of the terminal w writes to, or else
// $COLUMNS; ok is false when neither is known.
func termColumns(w io.Writer) (cols int, ok bool) {
	if f, isFile := w.(*os.File); isFile {
		if n := ttyColumns(f); n > 0 {
			return n, true
		}
	}
	n, err := strconv.Atoi(os.Getenv("COLUMNS"))
	if err != nil || n <= 0 {
		return 0, false
	}
	return n, true
}
