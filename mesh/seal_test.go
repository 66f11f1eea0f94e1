package mesh

import (
	"bytes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"io"
	mrand "math/rand/v2"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/hkdf"
)

// Computed independently (Python hmac and the "cryptography" package) from
// the golden transcript of wire_test.go and cookie "cookie": the dialer's
// first two records, a message frame "hi" and a tick, one record each.
const (
	goldenKeyDAChaCha  = "e0e0d2ed81c32f0621b60c1efcbbaa06691be3d192263bce14e31bb9abaec897"
	goldenRecordChaCha = "000000172bd136acb41365ecdcbe4597f5c9c9536f554a73a78291" +
		"000000156edfa716c94999470f187edb7ef8b72a68161fe3ab"
	goldenRecordAES = "000000178e5dd8e203ccd629aa97a05a907635aee41179704f3e63" +
		"000000158b9569f553946d4ee0e301d929d8beec1784a6b1a5"
)

func goldenSessions(t testing.TB, s suite) (dialer, acceptor *session) {
	t.Helper()
	tr := transcript{vD: 2, vA: 2, h: unhex(t, goldenHHex), c: unhex(t, goldenCHex)}
	th := tr.hash()
	d, err := newSession([]byte("cookie"), th, s, true)
	if err != nil {
		t.Fatal(err)
	}
	a, err := newSession([]byte("cookie"), th, s, false)
	if err != nil {
		t.Fatal(err)
	}
	return d, a
}

func TestKeyGolden(t *testing.T) {
	tr := transcript{vD: 2, vA: 2, h: unhex(t, goldenHHex), c: unhex(t, goldenCHex)}
	prk := hkdf.Extract(sha256.New, []byte("cookie"), tr.hash())
	if got := expand(prk, labelKeyDA+suiteChaCha.String()); !bytes.Equal(got, unhex(t, goldenKeyDAChaCha)) {
		t.Fatalf("k_D2A %x", got)
	}
}

func TestRecordGolden(t *testing.T) {
	for _, tc := range []struct {
		s   suite
		hex string
	}{{suiteChaCha, goldenRecordChaCha}, {suiteAESGCM, goldenRecordAES}} {
		t.Run(tc.s.String(), func(t *testing.T) {
			d, a := goldenSessions(t, tc.s)
			var out bytes.Buffer
			w := newSealWriter(&out, d.send)
			w.Write(appendFrame(nil, frameMessage, []byte("hi")))
			w.Flush()
			w.Write(appendFrame(nil, frameTick, nil))
			w.Flush()
			if want := unhex(t, tc.hex); !bytes.Equal(out.Bytes(), want) {
				t.Fatalf("records\n got %x\nwant %x", out.Bytes(), want)
			}
			fr := frameReader{r: newOpenReader(bytes.NewReader(out.Bytes()), a.recv), limit: 1 << 20}
			for _, want := range []frameType{frameMessage, frameTick} {
				if typ, _, err := fr.next(); err != nil || typ != want {
					t.Fatalf("next = %v, %v; want %v", typ, err, want)
				}
			}
			if _, _, err := fr.next(); err != io.EOF {
				t.Fatalf("after the records: %v, want EOF", err)
			}
			// The acceptor's own send key does not open the dialer's records.
			fr = frameReader{r: newOpenReader(bytes.NewReader(out.Bytes()), a.send), limit: 1 << 20}
			if _, _, err := fr.next(); !errors.Is(err, errTampered) {
				t.Fatalf("reflected record: %v, want errTampered", err)
			}
		})
	}
}

// A stream of frames of random sizes, written and flushed at random points,
// reads back identical; many small frames share a record.
func TestSealRoundTrip(t *testing.T) {
	for _, s := range []suite{suiteChaCha, suiteAESGCM} {
		d, a := goldenSessions(t, s)
		q, w, out := newTestWriter(d.send, 1<<20)
		rng := mrand.New(mrand.NewPCG(1, 2))
		var want [][]byte
		for i := range 2000 {
			n := rng.IntN(300)
			if i%100 == 0 {
				n = rng.IntN(200 << 10) // spans several records
			}
			p := make([]byte, n)
			rand.Read(p)
			want = append(want, bytes.Clone(p))
			if q.push(p) != nil {
				t.Fatal("queue full")
			}
			clear(p) // the caller may reuse its buffer once Send returns
			if rng.IntN(50) == 0 {
				if err := w.flush(); err != nil {
					t.Fatal(err)
				}
			}
		}
		drain(t, w)
		if q.ctr > 200 {
			t.Errorf("%v: %d records for %d frames: small frames are not batched", s, q.ctr, len(want))
		}
		readBack(t, out.Bytes(), a.recv, want)
	}
}

// bufConn collects what a queueWriter writes.
type bufConn struct{ bytes.Buffer }

func (*bufConn) SetWriteDeadline(time.Time) error { return nil }

// newTestWriter is a link's queue and writer over a buffer.
func newTestWriter(aead cipher.AEAD, limit int) (*sendQueue, *queueWriter, *bufConn) {
	c := new(bufConn)
	q := newSendQueue(limit, aead)
	return q, &queueWriter{q: q, dw: &deadlineWriter{c: c, d: time.Second}, aead: aead, st: new(counters)}, c
}

// drain writes everything queued.
func drain(t *testing.T, w *queueWriter) {
	t.Helper()
	for {
		if err := w.flush(); err != nil {
			t.Fatal(err)
		}
		w.q.mu.Lock()
		empty := w.q.emptyLocked()
		w.q.mu.Unlock()
		if empty {
			return
		}
	}
}

// readBack reads stream (sealed records if recv is set, plain frames
// otherwise) and wants exactly the messages want, in order.
func readBack(t *testing.T, stream []byte, recv cipher.AEAD, want [][]byte) {
	t.Helper()
	var r io.Reader = bytes.NewReader(stream)
	if recv != nil {
		r = newOpenReader(r, recv)
	}
	fr := frameReader{r: r, limit: 1 << 20}
	for i, p := range want {
		typ, body, err := fr.next()
		if err != nil || typ != frameMessage || !bytes.Equal(body, p) {
			t.Fatalf("frame %d (%d bytes): %v %d bytes %v", i, len(p), typ, len(body), err)
		}
	}
	if _, _, err := fr.next(); err != io.EOF {
		t.Fatalf("after the stream: %v", err)
	}
}

// readAll reads frames until an error.
func readAll(stream []byte, s *session) (n int, err error) {
	fr := frameReader{r: newOpenReader(bytes.NewReader(stream), s.recv), limit: 1 << 20}
	for {
		if _, _, err := fr.next(); err != nil {
			return n, err
		}
		n++
	}
}

// Every single-bit flip, every cut, a replayed, a dropped, a reordered and
// an injected record: never a frame from a damaged record.
func TestSealTamper(t *testing.T) {
	d, a := goldenSessions(t, suiteChaCha)
	var out bytes.Buffer
	w := newSealWriter(&out, d.send)
	var recs [][]byte
	for _, m := range []string{"one", "two", "three"} {
		start := out.Len()
		w.Write(appendFrame(nil, frameMessage, []byte(m)))
		w.Flush()
		recs = append(recs, bytes.Clone(out.Bytes()[start:]))
	}
	stream := out.Bytes()
	if n, err := readAll(stream, a); n != 3 || err != io.EOF {
		t.Fatalf("clean stream: %d frames, %v", n, err)
	}
	for bit := range len(stream) * 8 {
		bad := bytes.Clone(stream)
		bad[bit/8] ^= 1 << (bit % 8)
		rec := 0
		for off := len(recs[0]); bit/8 >= off; off += len(recs[rec]) {
			rec++
		}
		n, err := readAll(bad, a)
		if n > rec || err == io.EOF || err == nil {
			t.Fatalf("bit %d (record %d) flipped: %d frames, %v", bit, rec, n, err)
		}
	}
	for cut := 1; cut < len(stream); cut++ {
		if n, err := readAll(stream[:cut], a); err == io.EOF && n < 3 && !atBoundary(recs, cut) {
			t.Fatalf("cut at %d: clean EOF after %d frames", cut, n)
		}
	}
	cat := func(rs ...[]byte) []byte { return bytes.Join(rs, nil) }
	forged := make([]byte, len(recs[1]))
	copy(forged, recs[1][:4])
	rand.Read(forged[4:])
	for _, tc := range []struct {
		name   string
		stream []byte
		ok     int
	}{
		{"replayed", cat(recs[0], recs[0], recs[1]), 1},
		{"dropped", cat(recs[0], recs[2]), 1},
		{"reordered", cat(recs[1], recs[0]), 0},
		{"injected", cat(recs[0], forged, recs[1]), 1},
		{"plaintext frame injected", cat(recs[0], appendFrame(nil, frameMessage, make([]byte, 40)), recs[1]), 1},
	} {
		n, err := readAll(tc.stream, a)
		if n != tc.ok || !errors.Is(err, errTampered) {
			t.Errorf("%s: %d frames, %v; want %d then errTampered", tc.name, n, err, tc.ok)
		}
	}
	// Lengths out of range are refused before reading the body.
	for _, tc := range []struct {
		in   string
		want error
	}{{"00000000", errMalformed}, {"00000010", errMalformed}, {"00020011", errFrameTooLarge}, {"ffffffff", errFrameTooLarge}} {
		if _, err := readAll(unhex(t, tc.in), a); !errors.Is(err, tc.want) {
			t.Errorf("record length %s: %v, want %v", tc.in, err, tc.want)
		}
	}
}

func atBoundary(recs [][]byte, cut int) bool {
	off := 0
	for _, r := range recs {
		off += len(r)
		if cut == off {
			return true
		}
	}
	return false
}

func FuzzOpenReader(f *testing.F) {
	f.Add(unhex(f, goldenRecordChaCha))
	f.Add(unhex(f, "00000011 00000000000000000000000000000000 00"))
	f.Add(unhex(f, "ffffffff"))
	_, a := goldenSessions(f, suiteChaCha)
	f.Fuzz(func(t *testing.T, data []byte) {
		fr := frameReader{r: newOpenReader(bytes.NewReader(data), a.recv), limit: 1 << 10}
		for range len(data) + 1 {
			if _, _, err := fr.next(); err != nil {
				return
			}
		}
		t.Fatal("more frames than bytes")
	})
}

// countWriter counts the writes it gets.
type countWriter struct {
	bytes.Buffer
	writes int
}

func (c *countWriter) Write(p []byte) (int, error) { c.writes++; return c.Buffer.Write(p) }

// Message bodies as the link queues them: a body of directSeal bytes or
// more is sealed by Send straight from the caller's slice into records of
// its own (a 64 KiB one: its frame header's record and its own), and the
// reader opens the body's record straight into the frame's buffer. Damage
// to such a record is tampering, as for any other.
func TestSealDirect(t *testing.T) {
	for _, s := range []suite{suiteChaCha, suiteAESGCM} {
		d, a := goldenSessions(t, s)
		q, w, out := newTestWriter(d.send, 100)
		sizes := []int{0, 100, directSeal - 1, directSeal, 64 << 10, maxRecordPlain, maxRecordPlain + 1, 300 << 10}
		var want [][]byte
		for i, n := range sizes {
			p := make([]byte, n)
			rand.Read(p)
			want = append(want, bytes.Clone(p))
			ctr := q.ctr
			q.push(p)
			clear(p)
			if n == 64<<10 {
				if err := w.flush(); err != nil {
					t.Fatal(err)
				}
				if q.ctr != ctr+2 {
					t.Errorf("%v: a 64 KiB body took %d records, want 2", s, q.ctr-ctr)
				}
			}
			if i%2 == 1 {
				if err := w.flush(); err != nil {
					t.Fatal(err)
				}
			}
		}
		drain(t, w)
		stream := out.Bytes()
		readBack(t, stream, a.recv, want)
		// One bit flipped in the middle of the last body's first record.
		bad := bytes.Clone(stream)
		bad[len(bad)-(300<<10)+100] ^= 0x10
		n, err := readAll(bad, a)
		if n != len(sizes)-1 || !errors.Is(err, errTampered) {
			t.Fatalf("%v: flipped bit in a directly opened record: %d frames, %v", s, n, err)
		}
	}
}

// A queue adopted by the next link of a flapping member (rekey): what was
// queued for the broken link, sealed by Send under its key or not, goes on
// the new link under the new key, numbered from 0, in order; and plain
// when the new link has no record layer, or sealed when the old one had
// none.
func TestQueueRekey(t *testing.T) {
	d1, _ := goldenSessions(t, suiteAESGCM)
	tr := transcript{vD: 2, vA: 2, h: []byte("other hello"), c: []byte("other challenge")}
	d2, err := newSession([]byte("cookie"), tr.hash(), suiteAESGCM, true)
	if err != nil {
		t.Fatal(err)
	}
	a2, _ := newSession([]byte("cookie"), tr.hash(), suiteAESGCM, false)
	sizes := []int{10, 64 << 10, 20, 300 << 10, 0, directSeal, 5000}
	for _, tc := range []struct {
		name     string
		old, new cipher.AEAD
		recv     cipher.AEAD
	}{
		{"sealed to sealed", d1.send, d2.send, a2.recv},
		{"sealed to plain", d1.send, nil, nil},
		{"plain to sealed", nil, d2.send, a2.recv},
	} {
		t.Run(tc.name, func(t *testing.T) {
			q, _, _ := newTestWriter(tc.old, 100)
			var want [][]byte
			push := func() {
				for _, n := range sizes {
					p := make([]byte, n)
					rand.Read(p)
					want = append(want, bytes.Clone(p))
					q.push(p)
					clear(p)
				}
			}
			push()
			q.cutLocked() // as if the broken link's writer had taken the open item too
			push()
			q.rekey(tc.new)
			push() // Sends to the new link before and after its writer starts
			out := new(bufConn)
			w := &queueWriter{q: q, dw: &deadlineWriter{c: out, d: time.Second}, aead: tc.new, st: new(counters)}
			drain(t, w)
			readBack(t, out.Bytes(), tc.recv, want)
		})
	}
}

// Senders racing one writer: each one's messages arrive in its order and
// intact (numbers are reserved in queue order, bodies sealed outside the
// lock).
func TestQueueConcurrent(t *testing.T) {
	d, a := goldenSessions(t, suiteAESGCM)
	q, w, out := newTestWriter(d.send, 64)
	const senders, each = 4, 300
	done := make(chan struct{})
	var wg sync.WaitGroup
	for s := range senders {
		wg.Go(func() {
			rng := mrand.New(mrand.NewPCG(uint64(s), 1))
			for i := range each {
				n := 8 + rng.IntN(100)
				if rng.IntN(5) == 0 {
					n = directSeal + rng.IntN(100<<10)
				}
				p := make([]byte, n)
				p[0], p[1] = byte(s), byte(i)
				p[2] = byte(i >> 8)
				p[len(p)-1] = byte(i)
				for wait := q.push(p); wait != nil; wait = q.push(p) {
					<-wait
				}
			}
		})
	}
	go func() { wg.Wait(); close(done) }()
	for loop := true; loop; {
		select {
		case <-done:
			loop = false
		case <-q.wake:
		}
		if err := w.flush(); err != nil {
			t.Fatal(err)
		}
	}
	drain(t, w)
	fr := frameReader{r: newOpenReader(bytes.NewReader(out.Bytes()), a.recv), limit: 1 << 20}
	var next [senders]int
	for range senders * each {
		_, body, err := fr.next()
		if err != nil {
			t.Fatal(err)
		}
		s, i := int(body[0]), int(body[1])|int(body[2])<<8
		if i != next[s] || body[len(body)-1] != byte(i) {
			t.Fatalf("sender %d: message %d, want %d", s, i, next[s])
		}
		next[s]++
	}
}
