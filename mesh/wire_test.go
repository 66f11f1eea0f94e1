package mesh

import (
	"bytes"
	"encoding/hex"
	"errors"
	"io"
	"runtime"
	"strings"
	"testing"
)

func unhex(t testing.TB, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(strings.ReplaceAll(s, " ", ""))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func seq(from byte) (n [nonceLen]byte) {
	for i := range n {
		n[i] = from + byte(i)
	}
	return n
}

var (
	goldenH = hello{Incarnation: 0x0102030405060708, Start: 0x1112131415161718, MaxMessage: 1 << 20,
		Nonce: seq(0x20), Name: "a@127.0.0.1", Addr: "127.0.0.1:9100", Features: featSealAESGCM | featSealChaCha}
	goldenC = hello{Incarnation: 0x8877665544332211, Start: 1, MaxMessage: 1024,
		Nonce: seq(0x40), Name: "b@127.0.0.1", Addr: "127.0.0.1:9101", Features: featSealChaCha}
)

const (
	goldenHHex = "0102030405060708 1112131415161718 00100000" +
		" 202122232425262728292a2b2c2d2e2f303132333435363738393a3b3c3d3e3f" +
		" 0b 61403132372e302e302e31 0e 3132372e302e302e313a39313030 0000000000000003"
	goldenCHex = "8877665544332211 0000000000000001 00000400" +
		" 404142434445464748494a4b4c4d4e4f505152535455565758595a5b5c5d5e5f" +
		" 0b 62403132372e302e302e31 0e 3132372e302e302e313a39313031 0000000000000002"
	// Computed independently (Python hashlib/hmac) over the bodies above,
	// versions 2 and 2, cookie "cookie", no TLS exporter.
	goldenTranscriptHex = "eb18918dca3ed048c508d7799ea66371866ba84331776c4ecec9513468fc9af7"
	goldenProofHex      = "cba4fc15822c47231e69c888679bcc7eef410de733aebb6468087578ac145ee7"
	goldenWelcomeHex    = "31cd465d724f17673dbb377f26496577c521dd7245a3c505082eaedf60d86208"
	// The dialer proof with the TLS exporter 00 01 .. 1f.
	goldenProofTLSHex = "7ee4b90128b9bdcc296ba6e84c85ca9b0ed7b01b0aaecc400fdc38fc5e57c187"
)

func TestHelloGolden(t *testing.T) {
	for _, tc := range []struct {
		h   hello
		hex string
	}{{goldenH, goldenHHex}, {goldenC, goldenCHex}} {
		want := unhex(t, tc.hex)
		got := appendHello(nil, &tc.h)
		if !bytes.Equal(got, want) {
			t.Fatalf("appendHello(%s)\n got %x\nwant %x", tc.h.Name, got, want)
		}
		back, err := parseHello(want)
		if err != nil || back != tc.h {
			t.Fatalf("parseHello = %+v, %v; want %+v", back, err, tc.h)
		}
	}
}

func TestFrameGolden(t *testing.T) {
	for _, tc := range []struct {
		typ  frameType
		body []byte
		hex  string
	}{
		{frameTick, nil, "00000001 10"},
		{frameGoodbye, nil, "00000001 13"},
		{frameMessage, []byte("hi"), "00000003 11 6869"},
		{frameRefuse, []byte{refuseStale}, "00000002 05 02"},
		{frameHello, unhex(t, goldenHHex), "00000058 01" + goldenHHex},
	} {
		want := unhex(t, tc.hex)
		if got := appendFrame(nil, tc.typ, tc.body); !bytes.Equal(got, want) {
			t.Errorf("appendFrame(%v)\n got %x\nwant %x", tc.typ, got, want)
		}
		fr := frameReader{r: bytes.NewReader(want), limit: 1024}
		typ, body, err := fr.next()
		if err != nil || typ != tc.typ || !bytes.Equal(body, tc.body) {
			t.Errorf("next(%x) = %v %x %v", want, typ, body, err)
		}
		if _, _, err := fr.next(); err != io.EOF {
			t.Errorf("after one frame: %v, want EOF", err)
		}
	}
	if got, want := appendPreamble(nil), unhex(t, "4d434c41 02"); !bytes.Equal(got, want) {
		t.Errorf("preamble %x, want %x", got, want)
	}
}

func TestMACGolden(t *testing.T) {
	h, c := unhex(t, goldenHHex), unhex(t, goldenCHex)
	tr := transcript{vD: 2, vA: 2, h: h, c: c}
	th := tr.hash()
	if !bytes.Equal(th, unhex(t, goldenTranscriptHex)) {
		t.Fatalf("transcript hash %x", th)
	}
	if got := handshakeMAC([]byte("cookie"), labelDialer, th); !bytes.Equal(got, unhex(t, goldenProofHex)) {
		t.Errorf("dialer proof %x", got)
	}
	if got := handshakeMAC([]byte("cookie"), labelAcceptor, th); !bytes.Equal(got, unhex(t, goldenWelcomeHex)) {
		t.Errorf("acceptor proof %x", got)
	}
	if bytes.Equal(handshakeMAC([]byte("cookie"), labelDialer, th), handshakeMAC([]byte("cookie2"), labelDialer, th)) {
		t.Error("MAC does not depend on the cookie")
	}
	x := make([]byte, 32)
	for i := range x {
		x[i] = byte(i)
	}
	trx := transcript{vD: 2, vA: 2, h: h, c: c, exporter: x}
	if got := handshakeMAC([]byte("cookie"), labelDialer, trx.hash()); !bytes.Equal(got, unhex(t, goldenProofTLSHex)) {
		t.Errorf("dialer proof with TLS exporter %x", got)
	}
	// Every input changes the transcript: versions, both bodies, exporter.
	for _, other := range []transcript{
		{vD: 3, vA: 2, h: h, c: c}, {vD: 2, vA: 3, h: h, c: c},
		{vD: 2, vA: 2, h: append(bytes.Clone(h), 0), c: c}, {vD: 2, vA: 2, h: h, c: append(bytes.Clone(c), 0)},
		{vD: 2, vA: 2, h: c, c: h}, {vD: 2, vA: 2, h: h, c: c, exporter: x[:31]},
	} {
		if bytes.Equal(other.hash(), th) {
			t.Errorf("transcript %+v hashes like the golden one", other)
		}
	}
}

func TestReadFrameErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   string
		want error
	}{
		{"empty", "", io.EOF},
		{"short length", "0000", io.ErrUnexpectedEOF},
		{"zero length", "00000000 10", errMalformed},
		{"over limit", "00000402 11", errFrameTooLarge},
		{"huge", "ffffffff", errFrameTooLarge},
		{"no type", "00000001", io.ErrUnexpectedEOF},
		{"truncated body", "00000010 11 0102", io.ErrUnexpectedEOF},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fr := frameReader{r: bytes.NewReader(unhex(t, tc.in)), limit: 1025}
			if _, _, err := fr.next(); !errors.Is(err, tc.want) {
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
		})
	}
}

// A claimed length above the limit must be refused before any allocation
// of that size.
func TestReadFrameNoAllocOnClaim(t *testing.T) {
	in := unhex(t, "7fffffff 11")
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	for range 100 {
		fr := frameReader{r: bytes.NewReader(in), limit: 1 << 20}
		if _, _, err := fr.next(); !errors.Is(err, errFrameTooLarge) {
			t.Fatal(err)
		}
	}
	runtime.ReadMemStats(&after)
	if d := after.TotalAlloc - before.TotalAlloc; d > 1<<20 {
		t.Fatalf("allocated %d bytes for 100 refused frames", d)
	}
}

func TestParseHelloErrors(t *testing.T) {
	good := unhex(t, goldenHHex)
	mut := func(f func(b []byte) []byte) []byte { return f(bytes.Clone(good)) }
	for _, tc := range []struct {
		name string
		in   []byte
	}{
		{"empty", nil},
		{"short", good[:40]},
		{"truncated features", good[:len(good)-1]},
		{"no features", good[:len(good)-featuresLen]},
		{"zero incarnation", mut(func(b []byte) []byte { copy(b, make([]byte, 8)); return b })},
		{"zero max", mut(func(b []byte) []byte { copy(b[16:], make([]byte, 4)); return b })},
		{"name with port", appendHello(nil, &hello{Incarnation: 1, MaxMessage: 1, Name: "a@h:1", Addr: "h:1"})},
		{"name without @", appendHello(nil, &hello{Incarnation: 1, MaxMessage: 1, Name: "ah", Addr: "h:1"})},
		{"addr without port", appendHello(nil, &hello{Incarnation: 1, MaxMessage: 1, Name: "a@h", Addr: "h"})},
		{"addr port 0", appendHello(nil, &hello{Incarnation: 1, MaxMessage: 1, Name: "a@h", Addr: "h:0"})},
		{"empty name", mut(func(b []byte) []byte { b[helloFixedLen] = 0; return b })},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if h, err := parseHello(tc.in); !errors.Is(err, errMalformed) {
				t.Fatalf("parseHello = %+v, %v; want errMalformed", h, err)
			}
		})
	}
}

// Bytes after the features are extensions of later versions: ignored.
func TestParseHelloTrailing(t *testing.T) {
	in := append(unhex(t, goldenHHex), 0xde, 0xad, 0xbe, 0xef)
	h, err := parseHello(in)
	if err != nil || h != goldenH {
		t.Fatalf("parseHello with trailing bytes = %+v, %v", h, err)
	}
}

func TestPeers(t *testing.T) {
	ps := []peerInfo{{"a@127.0.0.1", "127.0.0.1:1"}, {"b@::1", "[::1]:2"}}
	body := appendPeers(nil, ps, 1<<20)
	want := unhex(t, "0002 0b61403132372e302e302e31 0b3132372e302e302e313a31 0562403a3a31 075b3a3a315d3a32")
	if !bytes.Equal(body, want) {
		t.Fatalf("appendPeers\n got %x\nwant %x", body, want)
	}
	back, err := parsePeers(body)
	if err != nil || len(back) != 2 || back[0] != ps[0] || back[1] != ps[1] {
		t.Fatalf("parsePeers = %v, %v", back, err)
	}
	// Trailing bytes are a later version's extension: ignored.
	if back, err := parsePeers(append(bytes.Clone(body), 1, 2, 3)); err != nil || len(back) != 2 {
		t.Fatalf("parsePeers with trailing bytes = %v, %v", back, err)
	}
	// A limit drops entries that do not fit.
	if got := appendPeers(nil, ps, 2+1+11+1+11); !bytes.Equal(got[:2], []byte{0, 1}) {
		t.Fatalf("limited appendPeers count %x", got[:2])
	}
	for _, bad := range []string{"", "00", "0001", "ffff", "0001 00 00", "0001 01 61 01 61"} {
		if _, err := parsePeers(unhex(t, bad)); !errors.Is(err, errMalformed) {
			t.Errorf("parsePeers(%s) = %v, want errMalformed", bad, err)
		}
	}
}

func TestValidateName(t *testing.T) {
	for _, tc := range []struct {
		in string
		ok bool
	}{
		{"a@127.0.0.1", true},
		{"api@host.example", true},
		{"a@::1", true},
		{"a@fe80::1%eth0", true},
		{"", false},
		{"a", false},
		{"@h", false},
		{"a@", false},
		{"a@b@c", false},
		{"a@127.0.0.1:9100", false},
		{"a@[::1]", false},
		{"a@[::1]:1", false},
		{"a b@h", false},
		{"a|b@h", false},
		{"a@" + strings.Repeat("h", 300), false},
	} {
		if err := validateName(tc.in); (err == nil) != tc.ok {
			t.Errorf("validateName(%q) = %v, want ok=%v", tc.in, err, tc.ok)
		} else if err != nil && !errors.Is(err, ErrInvalidName) {
			t.Errorf("validateName(%q) = %v, not ErrInvalidName", tc.in, err)
		}
	}
}

func FuzzReadFrame(f *testing.F) {
	f.Add(unhex(f, "00000001 10"))
	f.Add(unhex(f, "00000003 11 6869 00000001 13"))
	f.Add(unhex(f, "00000058 01"+goldenHHex))
	f.Add(unhex(f, "ffffffff"))
	f.Add(unhex(f, "00000000 10"))
	f.Add(unhex(f, "00000010 11 0102"))
	f.Add(unhex(f, "4d434c41 02 00000001 10"))
	f.Fuzz(func(t *testing.T, data []byte) {
		const limit = 256
		fr := frameReader{r: bytes.NewReader(data), limit: limit}
		var re []byte
		for range len(data) + 1 {
			typ, body, err := fr.next()
			if err != nil {
				if !bytes.HasPrefix(data, re) {
					t.Fatalf("re-encoded %x is not a prefix of %x", re, data)
				}
				return
			}
			if len(body)+1 > limit {
				t.Fatalf("body of %d bytes over limit %d", len(body), limit)
			}
			re = appendFrame(re, typ, body)
		}
		t.Fatal("more frames than bytes")
	})
}

// FuzzHandshake fuzzes the parsers of the handshake messages (hello and
// challenge bodies, proof/welcome MACs, refuse codes) and of the peers list.
// The first byte selects the message; every accepted input must re-encode to
// the same bytes.
func FuzzHandshake(f *testing.F) {
	f.Add(append([]byte{0}, unhex(f, goldenHHex)...))
	f.Add(append([]byte{0}, unhex(f, goldenCHex)...))
	f.Add(append([]byte{1}, unhex(f, goldenProofHex)...))
	f.Add([]byte{2, refuseStale})
	f.Add(append([]byte{3}, appendPeers(nil, []peerInfo{{"a@127.0.0.1", "127.0.0.1:1"}}, 1<<10)...))
	f.Add([]byte{0})
	f.Add(append([]byte{0}, make([]byte, helloFixedLen+4)...))
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) == 0 {
			return
		}
		msg := data[1:]
		switch data[0] % 4 {
		case 0:
			h, err := parseHello(msg)
			if err != nil {
				return
			}
			if h.Incarnation == 0 || h.MaxMessage == 0 || validateName(h.Name) != nil || validateAddr(h.Addr) != nil {
				t.Fatalf("accepted invalid hello %+v", h)
			}
			if re := appendHello(nil, &h); !bytes.HasPrefix(msg, re) {
				t.Fatalf("hello re-encodes to %x, not a prefix of input %x", re, msg)
			}
		case 1:
			if mac, err := parseMAC(msg); err == nil && len(mac) != macLen {
				t.Fatalf("accepted MAC of %d bytes", len(mac))
			}
		case 2:
			if code, err := parseRefuse(msg); err == nil && (len(msg) < 1 || code != msg[0]) {
				t.Fatalf("refuse %x parsed as %d", msg, code)
			}
		case 3:
			ps, err := parsePeers(msg)
			if err != nil {
				return
			}
			if re := appendPeers(nil, ps, len(msg)); !bytes.HasPrefix(msg, re) {
				t.Fatalf("peers re-encode to %x, not a prefix of input %x", re, msg)
			}
		}
	})
}

func TestFrameTypeString(t *testing.T) {
	for typ, want := range map[frameType]string{
		frameHello:   "hello (0x01)",
		frameWelcome: "welcome (0x04)",
		frameGoodbye: "goodbye (0x13)",
		0x7f:         "0x7f",
	} {
		if got := typ.String(); got != want {
			t.Errorf("frameType(0x%02x).String() = %q, want %q", byte(typ), got, want)
		}
	}
}
