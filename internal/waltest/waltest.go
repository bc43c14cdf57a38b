// Package waltest reads a data directory as anyone who found it could, for
// the tests that check what is left on disk (SPEC §8: acknowledged or
// deleted data must leave it): every file's bytes as stored and, for the
// files of the write-ahead log, the decompressed payload of every frame, so
// that a grep finds data whether or not compression hid it.
//
// It decodes the log's files from their specification (wal/doc.go: file
// header, frames, compression) and does not import package wal, so that
// wal's own tests can use it and so that it does not share the decoder it
// checks.
//
// PollSyncs (poll.go) plays the relay's event loop for a log whose fsyncs go
// through io_uring, for the tests of wal and of the disk store.
package waltest

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"path/filepath"

	"github.com/klauspost/compress/s2"
	"github.com/klauspost/compress/zstd"

	"github.com/smprelay/smprelay/internal/vfs"
)

// The log's format (wal/doc.go).
const (
	fileMagic       = "smp-wal\x00"
	fileHeaderSize  = 32
	frameHeaderSize = 16
	frameBatch      = 1
	frameCommit     = 2
	compNone        = 0
	compS2          = 1
	compZstd        = 2
	maxFrameBytes   = 8 << 20
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Contents returns every regular file under dir, recursively, read through
// fsys: its path, and its bytes as stored followed, for a file of the
// write-ahead log (one that starts with the log's magic), by the
// decompressed payload of each of its batch frames. A log file whose frames
// do not all check and decompress to its end is an error: a grep of bytes
// that could not be decoded would prove nothing.
func Contents(fsys vfs.FS, dir string) (map[string][]byte, error) {
	out := map[string][]byte{}
	if err := walk(fsys, dir, out); err != nil {
		return nil, err
	}
	return out, nil
}

func walk(fsys vfs.FS, dir string, out map[string][]byte) error {
	ents, err := fsys.ReadDir(dir)
	if err != nil {
		return err
	}
	for _, e := range ents {
		path := filepath.Join(dir, e.Name())
		if e.IsDir() {
			if err := walk(fsys, path, out); err != nil {
				return err
			}
			continue
		}
		b, err := vfs.ReadFile(fsys, path, 1<<40)
		if err != nil {
			return err
		}
		if len(b) >= len(fileMagic) && string(b[:len(fileMagic)]) == fileMagic {
			plain, err := Payloads(b)
			if err != nil {
				return fmt.Errorf("%s: %w", path, err)
			}
			b = append(b, plain...)
		}
		out[path] = b
	}
	return nil
}

// Payloads returns the decompressed payloads of the batch frames of a whole
// log file (segment or snapshot), back to back: the records it holds. It
// checks each frame's checksum and fails at the first frame that does not
// check or decompress.
func Payloads(file []byte) ([]byte, error) {
	if len(file) < fileHeaderSize || string(file[:len(fileMagic)]) != fileMagic {
		return nil, errors.New("not a log file")
	}
	if crc32.Checksum(file[:28], castagnoli) != binary.LittleEndian.Uint32(file[28:]) {
		return nil, errors.New("file header checksum mismatch")
	}
	zdec, err := zstd.NewReader(nil, zstd.WithDecoderConcurrency(1), zstd.WithDecoderMaxMemory(maxFrameBytes))
	if err != nil {
		return nil, err
	}
	defer zdec.Close()
	var out []byte
	for off := fileHeaderSize; off < len(file); {
		h := file[off:]
		if len(h) < frameHeaderSize {
			return nil, fmt.Errorf("frame header cut short at offset %d", off)
		}
		length := int(binary.LittleEndian.Uint32(h))
		typ, comp := h[8], h[9]
		rawLen := int(binary.LittleEndian.Uint32(h[12:]))
		if length > maxFrameBytes || rawLen > maxFrameBytes || length > len(h)-frameHeaderSize {
			return nil, fmt.Errorf("frame at offset %d: %d bytes (%d raw) in %d left", off, length, rawLen, len(h)-frameHeaderSize)
		}
		p := h[frameHeaderSize : frameHeaderSize+length]
		crc := crc32.Update(crc32.Checksum(h[0:4], castagnoli), castagnoli, h[8:16])
		if crc32.Update(crc, castagnoli, p) != binary.LittleEndian.Uint32(h[4:]) {
			return nil, fmt.Errorf("frame at offset %d: checksum mismatch", off)
		}
		switch typ {
		case frameCommit:
		case frameBatch:
			raw, err := decompress(zdec, comp, p)
			if err != nil {
				return nil, fmt.Errorf("frame at offset %d: %w", off, err)
			}
			if len(raw) != rawLen {
				return nil, fmt.Errorf("frame at offset %d: %d bytes decompressed, header says %d", off, len(raw), rawLen)
			}
			out = append(out, raw...)
		default:
			return nil, fmt.Errorf("frame at offset %d: unknown type %d", off, typ)
		}
		off += frameHeaderSize + length
	}
	return out, nil
}

func decompress(zdec *zstd.Decoder, comp byte, p []byte) ([]byte, error) {
	switch comp {
	case compNone:
		return p, nil
	case compS2:
		return s2.Decode(nil, p)
	case compZstd:
		return zdec.DecodeAll(p, nil)
	}
	return nil, fmt.Errorf("unknown compression %d", comp)
}
