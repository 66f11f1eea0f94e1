package mesh

import (
	"crypto/cipher"
	"encoding/binary"
	"io"
	"math"
)

// A reference record writer for tests (a peer that writes records the
// simplest way): the link's own writer is queueWriter (link.go).

// sealWriter buffers the frame stream and writes it as sealed records:
//
//	length  uint32   len(sealed), 17 to maxRecordBody
//	sealed  AEAD(key, nonce(ctr), plaintext, additional data = length bytes)
//
// A record is sealed at every Flush and whenever maxRecordPlain bytes are
// buffered, so a batch of small frames costs one seal, not one per frame.
// Frames may span records: the records carry a byte stream. A Write of at
// least directSeal bytes (a large message body) is not copied into the
// buffer: what is buffered is sealed as a record of its own, then p is
// sealed straight from the caller's slice into records behind it, and all
// of them go out in one write.
type sealWriter struct {
	dst   io.Writer
	aead  cipher.AEAD
	ctr   uint64
	nonce [12]byte
	// buf: header space, then buffered plaintext; its capacity leaves room
	// for the tag and for one more record (a directly sealed one) behind.
	buf []byte
	err error
}

func newSealWriter(dst io.Writer, aead cipher.AEAD) *sealWriter {
	return &sealWriter{dst: dst, aead: aead,
		buf: make([]byte, recordHeaderLen, 2*(recordHeaderLen+maxRecordBody))}
}

func (s *sealWriter) Write(p []byte) (int, error) {
	if len(p) >= directSeal {
		return s.writeDirect(p)
	}
	n := 0
	for len(p) > 0 {
		if s.err != nil {
			return n, s.err
		}
		k := min(recordHeaderLen+maxRecordPlain-len(s.buf), len(p))
		s.buf = append(s.buf, p[:k]...)
		p, n = p[k:], n+k
		if len(s.buf) == recordHeaderLen+maxRecordPlain {
			s.seal()
		}
	}
	return n, s.err
}

// writeDirect seals p, in records of at most maxRecordPlain bytes, from p
// into the buffer behind the buffered plaintext (sealed first, in place)
// and writes the records.
func (s *sealWriter) writeDirect(p []byte) (int, error) {
	if s.err != nil {
		return 0, s.err
	}
	n := 0
	out := s.buf[:0]
	if len(s.buf) > recordHeaderLen {
		out = s.sealInPlace()
	}
	for len(p) > 0 && s.err == nil {
		k := min(len(p), maxRecordPlain)
		out = s.sealTo(out, p[:k])
		if s.err != nil {
			break
		}
		_, s.err = s.dst.Write(out)
		out = s.buf[:0]
		p, n = p[k:], n+k
	}
	s.buf = s.buf[:recordHeaderLen]
	return n, s.err
}

// sealTo appends the record of plaintext pt to out.
func (s *sealWriter) sealTo(out, pt []byte) []byte {
	if s.ctr == math.MaxUint64 {
		s.err = errCounter
		return out
	}
	h := len(out)
	out = binary.BigEndian.AppendUint32(out, uint32(len(pt)+sealOverhead))
	out = s.aead.Seal(out, recordNonce(&s.nonce, s.ctr), pt, out[h:])
	s.ctr++
	return out
}

// Flush seals and writes what is buffered.
func (s *sealWriter) Flush() error {
	if s.err == nil && len(s.buf) > recordHeaderLen {
		s.seal()
	}
	return s.err
}

// seal seals the buffered plaintext and writes the record.
func (s *sealWriter) seal() {
	rec := s.sealInPlace()
	if s.err == nil {
		_, s.err = s.dst.Write(rec)
	}
	s.buf = s.buf[:recordHeaderLen]
}

// sealInPlace turns the buffered plaintext into a record in s.buf and
// returns it.
func (s *sealWriter) sealInPlace() []byte {
	if s.ctr == math.MaxUint64 {
		s.err = errCounter
		return s.buf[:0]
	}
	pt := s.buf[recordHeaderLen:]
	binary.BigEndian.PutUint32(s.buf, uint32(len(pt)+sealOverhead))
	ct := s.aead.Seal(pt[:0], recordNonce(&s.nonce, s.ctr), pt, s.buf[:recordHeaderLen])
	s.ctr++
	return s.buf[:recordHeaderLen+len(ct)]
}
