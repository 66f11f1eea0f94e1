package gossip

import (
	"bytes"
	"errors"
	"strings"
	"testing"

	"github.com/macula-io/cluster/discovery"
)

// The DESIGN.md test vectors, as golden wire bytes.
var vectors = []struct {
	secret, node string
	golden       []byte
}{
	{"s3cret", "a@127.0.0.1",
		[]byte("MACULA_GOSSIP:a@127.0.0.1|5E79D0AE046B12478AE741C4F4CBE5356FC53A65E7669A53CDD28C91D5C9F178")},
	{"my_cluster_secret", "node1@10.0.0.5:9100",
		[]byte("MACULA_GOSSIP:node1@10.0.0.5:9100|A1D2132D9E2486271B0625FA521A9AE4A5FCDF1C404A82F2DF8652BD6E591D5C")},
}

func TestCodecVectors(t *testing.T) {
	for _, v := range vectors {
		k := NewKeyring(v.secret)
		if got := AppendHeartbeat(nil, v.node, k); !bytes.Equal(got, v.golden) {
			t.Errorf("AppendHeartbeat(%q, %q)\n got %s\nwant %s", v.node, v.secret, got, v.golden)
		}
		// Appending to a non-empty buffer keeps the prefix and signs only the heartbeat.
		if got := AppendHeartbeat([]byte("xx"), v.node, k); !bytes.Equal(got, append([]byte("xx"), v.golden...)) {
			t.Errorf("AppendHeartbeat with prefix buffer: %s", got)
		}
		lower := append([]byte(nil), v.golden...)
		i := bytes.IndexByte(lower, '|')
		copy(lower[i:], bytes.ToLower(lower[i:]))
		for _, pkt := range [][]byte{v.golden, lower} {
			node, err := ParseHeartbeat(pkt, k)
			if err != nil || node != v.node {
				t.Errorf("ParseHeartbeat(%s) = %q, %v; want %q", pkt, node, err, v.node)
			}
			// Without a secret the HMAC is ignored.
			if node, err := ParseHeartbeat(pkt, nil); err != nil || node != v.node {
				t.Errorf("ParseHeartbeat(%s, no secret) = %q, %v", pkt, node, err)
			}
		}
	}
	if got := AppendHeartbeat(nil, "a@127.0.0.1", nil); string(got) != "MACULA_GOSSIP:a@127.0.0.1" {
		t.Errorf("unsigned = %q", got)
	}
	if got := AppendHeartbeat(nil, "a@127.0.0.1", NewKeyring()); string(got) != "MACULA_GOSSIP:a@127.0.0.1" {
		t.Errorf("empty keyring = %q", got)
	}
}

func TestParsePeer(t *testing.T) {
	for _, tc := range []struct {
		pkt  string
		node string
		want discovery.Peer
	}{
		{"MACULA_GOSSIP:a@127.0.0.1", "a@127.0.0.1", discovery.Peer{Name: "a@127.0.0.1"}},
		{"MACULA_GOSSIP:node1@10.0.0.5:9100", "node1@10.0.0.5:9100", discovery.Peer{Name: "node1@10.0.0.5", Addr: "10.0.0.5:9100"}},
		{"MACULA_GOSSIP:n@[::1]:9100|whatever", "n@[::1]:9100", discovery.Peer{Name: "n@::1", Addr: "[::1]:9100"}},
	} {
		node, p, err := parseHeartbeat([]byte(tc.pkt), nil)
		if err != nil || node != tc.node || p != tc.want {
			t.Errorf("parse(%q) = %q, %+v, %v; want %q, %+v", tc.pkt, node, p, err, tc.node, tc.want)
		}
		if p.Dialable() != (tc.want.Addr != "") {
			t.Errorf("%q dialable = %v", tc.pkt, p.Dialable())
		}
		// The node field is the peer in wire form.
		if f := discovery.FormatNode(p.Name, p.Addr); f != node {
			t.Errorf("%q: FormatNode(peer) = %q, want %q", tc.pkt, f, node)
		}
	}
}

func TestParseReject(t *testing.T) {
	s3 := NewKeyring("s3cret")
	good := string(vectors[0].golden)
	sig := good[strings.IndexByte(good, '|'):]
	otherSig := string(AppendHeartbeat(nil, "a@127.0.0.1", NewKeyring("other")))
	otherSig = otherSig[strings.IndexByte(otherSig, '|'):]
	long := "MACULA_GOSSIP:a@h|" + strings.Repeat("x", MaxPacketSize-len("MACULA_GOSSIP:a@h|"))
	for _, tc := range []struct {
		name string
		pkt  string
		k    *Keyring
		want error // nil = accepted
	}{
		{"exactly 1024 unsigned with junk suffix", long, nil, nil},
		{"1025 bytes", long + "x", nil, ErrTooLong},
		{"huge", strings.Repeat("A", 65000), s3, ErrTooLong},
		{"empty", "", nil, ErrMalformed},
		{"no prefix", "a@127.0.0.1", nil, ErrMalformed},
		{"lowercase prefix", "macula_gossip:a@127.0.0.1", nil, ErrMalformed},
		{"prefix without colon", "MACULA_GOSSIPa@127.0.0.1", nil, ErrMalformed},
		{"truncated prefix", "MACULA_GOSS", nil, ErrMalformed},
		{"empty node", "MACULA_GOSSIP:", nil, ErrBadNode},
		{"empty node signed", "MACULA_GOSSIP:|" + strings.Repeat("0", 64), nil, ErrBadNode},
		{"no at", "MACULA_GOSSIP:node", nil, ErrBadNode},
		{"two at", "MACULA_GOSSIP:a@b@c", nil, ErrBadNode},
		{"space", "MACULA_GOSSIP:a b@h", nil, ErrBadNode},
		{"nul", "MACULA_GOSSIP:a@h\x00", nil, ErrBadNode},
		{"high byte", "MACULA_GOSSIP:a@h\xff", nil, ErrBadNode},
		{"newline", "MACULA_GOSSIP:a@127.0.0.1\n", nil, ErrBadNode},
		{"port zero", "MACULA_GOSSIP:a@h:0", nil, ErrBadNode},
		{"port too big", "MACULA_GOSSIP:a@h:65536", nil, ErrBadNode},
		{"256 byte node", "MACULA_GOSSIP:a@" + strings.Repeat("h", 254), nil, ErrBadNode},
		{"255 byte node", "MACULA_GOSSIP:a@" + strings.Repeat("h", 253), nil, nil},
		{"unsigned with secret", "MACULA_GOSSIP:a@127.0.0.1", s3, ErrUnsigned},
		{"empty sig", "MACULA_GOSSIP:a@127.0.0.1|", s3, ErrBadSignature},
		{"short sig", good[:len(good)-1], s3, ErrBadSignature},
		{"long sig", good + "0", s3, ErrBadSignature},
		{"non-hex sig", good[:len(good)-1] + "G", s3, ErrBadSignature},
		{"other key", "MACULA_GOSSIP:a@127.0.0.1" + otherSig, s3, ErrBadSignature},
		{"sig of other node", "MACULA_GOSSIP:b@127.0.0.1" + sig, s3, ErrBadSignature},
		{"second bar", good + "|x", s3, ErrBadSignature},
		{"bad node, signed ok is still bad node", "MACULA_GOSSIP:nonode" + sig, nil, ErrBadNode},
		{"bad node unsigned with secret is unsigned", "MACULA_GOSSIP:nonode", s3, ErrUnsigned},
		{"good", good, s3, nil},
		{"good, no secret", good, nil, nil},
		{"unsigned, no secret", "MACULA_GOSSIP:a@127.0.0.1", nil, nil},
	} {
		node, err := ParseHeartbeat([]byte(tc.pkt), tc.k)
		if tc.want == nil {
			if err != nil {
				t.Errorf("%s: unexpected error %v", tc.name, err)
			}
			continue
		}
		if !errors.Is(err, tc.want) || node != "" {
			t.Errorf("%s: ParseHeartbeat = %q, %v; want %v", tc.name, node, err, tc.want)
		}
		if Reason(err) == "" {
			t.Errorf("%s: no reason for %v", tc.name, err)
		}
	}
	if Reason(nil) != "" || Reason(errors.New("x")) != "" {
		t.Error("Reason of non-parse error")
	}
}

func TestKeyringRotationCodec(t *testing.T) {
	oldOnly, newOld, oldNew := NewKeyring("old"), NewKeyring("new", "old"), NewKeyring("old", "new")
	fromOld := AppendHeartbeat(nil, "a@h:1", oldOnly)
	fromNewOld := AppendHeartbeat(nil, "b@h:1", newOld)
	fromOldNew := AppendHeartbeat(nil, "c@h:1", oldNew)
	for _, tc := range []struct {
		name string
		pkt  []byte
		k    *Keyring
		ok   bool
	}{
		{"[new,old] verifies old", fromOld, newOld, true},
		{"[old,new] verifies new", fromNewOld, oldNew, true},
		{"[new,old] verifies [old,new]", fromOldNew, newOld, true},
		{"[old] verifies [old,new]", fromOldNew, oldOnly, true},
		{"[old] rejects new", fromNewOld, oldOnly, false},
	} {
		_, err := ParseHeartbeat(tc.pkt, tc.k)
		if (err == nil) != tc.ok {
			t.Errorf("%s: err = %v", tc.name, err)
		}
	}
	if NewKeyring("", "a", "").Len() != 1 || (*Keyring)(nil).Len() != 0 {
		t.Error("Keyring.Len")
	}
}

func TestParseDoesNotAllocateBySize(t *testing.T) {
	k := NewKeyring("s3cret")
	big := append([]byte("MACULA_GOSSIP:a@h|"), bytes.Repeat([]byte("A"), 900)...)
	allocs := testing.AllocsPerRun(100, func() { _, _ = ParseHeartbeat(big, k) })
	if allocs > 0 {
		t.Errorf("rejecting a 918-byte packet allocated %.0f times", allocs)
	}
	if raceEnabled {
		return // the race detector makes sync.Pool drop entries at random
	}
	good := vectors[0].golden
	allocs = testing.AllocsPerRun(100, func() { _, _ = ParseHeartbeat(good, k) })
	if allocs > 3 {
		t.Errorf("parsing a signed heartbeat allocated %.0f times, want <= 3", allocs)
	}
}

func FuzzParseHeartbeat(f *testing.F) {
	for _, v := range vectors {
		f.Add(v.golden)
		f.Add(bytes.ToLower(v.golden))
	}
	for _, s := range []string{"", "MACULA_GOSSIP:", "MACULA_GOSSIP:a@127.0.0.1", "MACULA_GOSSIP:a@127.0.0.1|",
		"MACULA_GOSSIP:n@[::1]:9100", "MACULA_GOSSIP:a@b@c|00", "MACULA_GOSSIP:a@h:99999",
		"MACULA_GOSSIP:a@h|" + strings.Repeat("f", 64), strings.Repeat("MACULA_GOSSIP:", 80)} {
		f.Add([]byte(s))
	}
	keys := []*Keyring{nil, NewKeyring("s3cret"), NewKeyring("my_cluster_secret", "s3cret")}
	f.Fuzz(func(t *testing.T, pkt []byte) {
		for _, k := range keys {
			node, err := ParseHeartbeat(pkt, k)
			if err != nil {
				if node != "" || Reason(err) == "" {
					t.Fatalf("ParseHeartbeat(%q) = %q, %v (reason %q)", pkt, node, err, Reason(err))
				}
				continue
			}
			if len(pkt) > MaxPacketSize {
				t.Fatalf("accepted %d bytes", len(pkt))
			}
			want, err := discovery.ParseNode(node)
			if err != nil {
				t.Fatalf("accepted invalid node %q: %v", node, err)
			}
			if n2, p, err := parseHeartbeat(pkt, k); err != nil || n2 != node || p != want {
				t.Fatalf("parseHeartbeat(%q) = %q, %+v, %v; want %q, %+v", pkt, n2, p, err, node, want)
			}
			unsigned := AppendHeartbeat(nil, node, nil)
			if !bytes.HasPrefix(pkt, unsigned) || (len(pkt) > len(unsigned) && pkt[len(unsigned)] != '|') {
				t.Fatalf("%q is not %q plus an optional |suffix", pkt, unsigned)
			}
			if k.Len() > 0 {
				// Re-signing with the key that verified must give the packet back (modulo hex case).
				match := false
				for _, s := range []string{"s3cret", "my_cluster_secret"} {
					if bytes.EqualFold(AppendHeartbeat(nil, node, NewKeyring(s)), pkt) {
						match = true
					}
				}
				if !match {
					t.Fatalf("accepted %q with a signature no key produces", pkt)
				}
			}
		}
	})
}

func BenchmarkParseVerify(b *testing.B) {
	k := NewKeyring("my_cluster_secret")
	pkt := vectors[1].golden
	b.ReportAllocs()
	b.SetBytes(int64(len(pkt)))
	for b.Loop() {
		if _, err := ParseHeartbeat(pkt, k); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkParseUnsigned(b *testing.B) {
	pkt := []byte("MACULA_GOSSIP:node1@10.0.0.5:9100")
	b.ReportAllocs()
	b.SetBytes(int64(len(pkt)))
	for b.Loop() {
		if _, err := ParseHeartbeat(pkt, nil); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkAppendHeartbeat(b *testing.B) {
	k := NewKeyring("my_cluster_secret")
	buf := make([]byte, 0, 256)
	b.ReportAllocs()
	for b.Loop() {
		buf = AppendHeartbeat(buf[:0], "node1@10.0.0.5:9100", k)
	}
}
