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

	flushes int // blocks sealed so far; tells a caller that reserve started a new block

	// body is the scratch a body the store keeps is read into (scratch),
	// made on first use with a block's capacity, so that no valid body grows
	// it and the Writer never keeps a slice the store returned.
	body []byte
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

// reserve returns the block being filled with room for n more bytes,
// flushing it first when it has not: the one place where a transmission's
// bound is checked. The caller appends at most n bytes to the result and
// stores it back in w.buf (the write* methods below do both). n never
// exceeds a block's plaintext (maxBody leaves 1024 bytes for the header).
func (w *Writer) reserve(n int) []byte {
	if cap(w.buf)-len(w.buf) < n {
		w.flushBlock()
	}
	return w.buf
}

// scratch returns the Writer's empty body scratch, for store.ReadBody to
// append to; the body read stays valid until the next call.
func (w *Writer) scratch() []byte {
	if w.body == nil {
		w.body = make([]byte, 0, w.bs)
	}
	return w.body[:0]
}

// The write* methods append one server transmission each, within the bound
// reserve checked; codec.MaxResponse bounds every one but MSG.

func (w *Writer) writeOK(corrID, queueID []byte) {
	w.buf = codec.AppendOK(w.reserve(codec.MaxResponse(len(queueID))), corrID, queueID)
}

func (w *Writer) writeERR(corrID, queueID []byte, e codec.Error) {
	w.buf = codec.AppendERR(w.reserve(codec.MaxResponse(len(queueID))), corrID, queueID, e)
}

func (w *Writer) writePONG(corrID []byte) {
	w.buf = codec.AppendPONG(w.reserve(codec.MaxResponse(0)), corrID)
}

func (w *Writer) writeIDS(corrID, rid, sid []byte) {
	w.buf = codec.AppendIDS(w.reserve(codec.MaxResponse(0)), corrID, rid, sid)
}

func (w *Writer) writeEND(rid []byte) {
	w.buf = codec.AppendEND(w.reserve(codec.MaxResponse(len(rid))), rid)
}

func (w *Writer) writeMSG(corrID, rid, msgID []byte, ts int64, body []byte) {
	w.buf = codec.AppendMSG(w.reserve(codec.MSGSize(corrID, rid, len(body))), corrID, rid, msgID, ts, body)
}

// writeRaw appends a transmission already encoded: a reply that waited for
// the log, or the welcome line.
func (w *Writer) writeRaw(b []byte) {
	w.buf = append(w.reserve(len(b)), b...)
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
	w.writeRaw(codec.Welcome)
	w.flushBlock()
}
