package engine

import "github.com/smprelay/smprelay/codec"

// Writer packs outgoing transmissions into blocks (SPEC §3.3): it fills a
// block's plaintext until the next transmission would not fit, then pads and
// seals it in place at the end of a batch of sealed blocks, and hands the batch
// to Send when the batch is full or on Finish. So responses that are ready
// together share blocks and reach the socket in one write.
//
// A Writer is used by one goroutine at a time (an event loop, for the length of
// one OnTraffic call).
type Writer struct {
	// Seal encrypts one block in place; nil leaves blocks in plaintext (tests).
	Seal *codec.BlockCipher
	// Send takes a batch of whole blocks; it must copy what it keeps.
	Send func(batch []byte) error

	out   []byte // sealed blocks, then the block being filled
	start int    // where the block being filled starts in out
	buf   []byte // transmissions of the block being filled; aliases out[start:]
	bs    int    // block size
	err   error  // first error from Seal or Send; later writes are dropped

	flushes int // blocks sealed so far; tells a caller that room() started a new block
}

// batchBlocks is how many sealed blocks a Writer gathers before one write.
const batchBlocks = 8

// NewWriter returns a Writer for blocks of blockSize bytes.
func NewWriter(blockSize int) *Writer {
	w := &Writer{bs: blockSize, out: make([]byte, 0, batchBlocks*blockSize)}
	w.reset()
	return w
}

func (w *Writer) reset() {
	w.start = len(w.out)
	w.buf = w.out[w.start : w.start : w.start+w.bs-codec.TagSize]
}

// room makes sure the block being filled has n more bytes, flushing it first
// when it has not. n never exceeds a block's plaintext (maxBody leaves 1024
// bytes for the header).
func (w *Writer) room(n int) {
	if cap(w.buf)-len(w.buf) < n {
		w.flushBlock()
	}
}

// flushBlock pads and seals the block being filled, if it holds anything.
func (w *Writer) flushBlock() {
	if len(w.buf) == 0 {
		return
	}
	block := w.out[w.start : w.start+w.bs]
	codec.Pad(block[len(w.buf) : w.bs-codec.TagSize])
	if w.Seal != nil && w.err == nil {
		w.err = w.Seal.Seal(block)
	}
	w.out = w.out[:w.start+w.bs]
	w.flushes++
	if cap(w.out)-len(w.out) < w.bs {
		w.sendBatch()
	}
	w.reset()
}

func (w *Writer) sendBatch() {
	if len(w.out) > 0 && w.err == nil && w.Send != nil {
		w.err = w.Send(w.out)
	}
	w.out = w.out[:0]
}

// Finish flushes the partial block and the batch, and returns the first error
// met since the last Finish. The Writer can be used again afterwards.
func (w *Writer) Finish() error {
	w.flushBlock()
	w.sendBatch()
	w.reset()
	err := w.err
	w.err = nil
	return err
}

// Welcome writes the welcome block: the first server block holds "SMP/1" CRLF
// and padding only (SPEC §3.3).
func (w *Writer) Welcome() {
	w.flushBlock()
	w.buf = append(w.buf, codec.Welcome...)
	w.flushBlock()
}
