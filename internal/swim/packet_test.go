package swim

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"testing"
	"time"
)

func TestPacketGolden(t *testing.T) {
	p := &packet{Type: typePing, Seq: 0x01020304, From: node{"a", 1}, FromInc: 2, Target: node{"b", 3},
		Updates: []update{{Kind: KindSuspect, Node: node{"c", 4}, Inc: 5, From: "a"}}}
	want := []byte{
		1, 1, 2, 3, 4, // type, seq
		1, 'a', 0, 0, 0, 0, 0, 0, 0, 1, // sender
		0, 0, 0, 0, 0, 0, 0, 2, // sender incarnation
		1, 'b', 0, 0, 0, 0, 0, 0, 0, 3, // target
		1,                                 // one update
		2, 1, 'c', 0, 0, 0, 0, 0, 0, 0, 4, // suspect c/4
		0, 0, 0, 0, 0, 0, 0, 5, // incarnation 5
		1, 'a', // from a
	}
	got := encode(p)
	if !bytes.Equal(got, want) {
		t.Fatalf("encode\n got %v\nwant %v", got, want)
	}
	q, err := decode(got)
	if err != nil || !bytes.Equal(encode(q), want) {
		t.Fatalf("round trip: %v", err)
	}
	for _, bad := range [][]byte{
		nil, {0}, {5, 0, 0, 0, 0}, want[:len(want)-1], append(bytes.Clone(want), 0),
		{3, 0, 0, 0, 0, 0 /* empty sender name */, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0},
		{4, 0, 0, 0, 0, 1, 'x', 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, MaxUpdates + 1},
	} {
		if _, err := decode(bad); !errors.Is(err, ErrBadPacket) {
			t.Errorf("decode(%v) = %v, want ErrBadPacket", bad, err)
		}
	}
}

func FuzzDecode(f *testing.F) {
	f.Add(encode(&packet{Type: typePing, Seq: 1, From: node{"a", 1}, Target: node{"b", 2}}))
	f.Add(encode(&packet{Type: typeAck, Seq: 9, From: node{"b", 2}, FromInc: 3,
		Updates: []update{{Kind: KindAlive, Node: node{"b", 2}, Inc: 3}, {Kind: KindDead, Node: node{"c", 7}, From: "b"}}}))
	f.Add(encode(&packet{Type: typePingReq, Seq: 2, From: node{"a", 1}, Target: node{"x", 1}}))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := decode(b)
		if err != nil {
			if !errors.Is(err, ErrBadPacket) {
				t.Fatalf("error not ErrBadPacket: %v", err)
			}
		} else if !bytes.Equal(encode(p), b) {
			t.Fatalf("not canonical: %x", b)
		}
		// Whatever arrives, a detector survives it.
		d := New(Config{Name: "b", ID: 2, Send: func(string, []byte) {}, Rand: rand.New(rand.NewPCG(1, 1))})
		d.Add("a", 1, "a")
		d.Add("c", 7, "c")
		now := time.Unix(0, 0)
		d.Tick(now)
		d.Handle(now, "a", b)
		d.Tick(d.Next())
	})
}
