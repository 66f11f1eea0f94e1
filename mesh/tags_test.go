package mesh

import (
	"bytes"
	"context"
	"errors"
	"maps"
	"strings"
	"testing"
	"time"
)

// TestHelloTagsWire: golden bytes of the tags extension, and a hello with
// tags parses back; a hello without extensions is what version 2 sent.
func TestHelloTagsWire(t *testing.T) {
	tags := map[string]string{"role": "web", "az": "1"}
	h := hello{Incarnation: 1, MaxMessage: 1, Name: "a@h", Addr: "h:1", Tags: encodeTags(tags)}
	b := appendHello(nil, &h)
	noTags := h
	noTags.Tags = ""
	base := appendHello(nil, &noTags)
	want := []byte{extTags, 0, 15, 2, 2, 'a', 'z', 1, '1', 4, 'r', 'o', 'l', 'e', 3, 'w', 'e', 'b'}
	if !bytes.Equal(b[len(base):], want) {
		t.Fatalf("extension % x, want % x", b[len(base):], want)
	}
	got, err := parseHello(b)
	if err != nil || !maps.Equal(decodeTags(got.Tags), tags) {
		t.Fatalf("parse: %v %v", got.Tags, err)
	}
	// An unknown extension before it is skipped.
	unknown := append(append(append([]byte{}, base...), 0x7f, 0, 2, 'x', 'y'), want...)
	if got, err := parseHello(unknown); err != nil || decodeTags(got.Tags)["role"] != "web" {
		t.Fatalf("unknown extension: %v %v", got.Tags, err)
	}
	for _, bad := range [][]byte{
		append(append([]byte{}, base...), extTags, 0),                     // short header
		append(append([]byte{}, base...), extTags, 0, 9, 1),               // truncated
		append(append([]byte{}, base...), extTags, 0, 3, 1, 0, 0),         // empty key
		append(append([]byte{}, base...), extTags, 0, 5, 1, 1, 'k', 0, 9), // a byte after the tags
	} {
		// Not an error (the area was "ignored" before it had a format):
		// no tags.
		if got, err := parseHello(bad); err != nil || got.Tags != "" {
			t.Errorf("% x: tags %q, err %v; want none, nil", bad[len(base):], got.Tags, err)
		}
	}
}

func TestValidateTags(t *testing.T) {
	big := map[string]string{}
	for i := range MaxTags + 1 {
		big[strings.Repeat("k", i+1)] = ""
	}
	for _, bad := range []map[string]string{
		{"": "x"}, {"a b": "x"}, {"k": "a\nb"}, {"k": strings.Repeat("v", MaxTagBytes)}, big,
		{strings.Repeat("k", MaxTagKey+1): ""},
	} {
		if ValidateTags(bad) == nil {
			t.Errorf("ValidateTags(%q) accepted", bad)
		}
	}
	if err := ValidateTags(map[string]string{"role": "web", "version": "1.2.3", "service/port": "8080"}); err != nil {
		t.Error(err)
	}
	if _, err := Start(context.Background(), Config{Name: "a@127.0.0.1", Cookie: "c", Listen: "127.0.0.1:0", Tags: map[string]string{"": ""}}); !errors.Is(err, ErrInvalidConfig) {
		t.Errorf("Start with a bad tag: %v", err)
	}
}

// TestTagsAcrossTheHandshake: each side sees the other's tags in NodeUp
// and Links.
func TestTagsAcrossTheHandshake(t *testing.T) {
	a, ra := startNode(t, "a@127.0.0.1", func(c *Config) { c.Tags = map[string]string{"role": "db"} })
	b, rb := startNode(t, "b@127.0.0.1", func(c *Config) { c.Tags = map[string]string{"role": "web", "v": "2"} })
	a.Connect("b@127.0.0.1", b.Addr())
	ra.waitEvent(t, 10*time.Second, NodeUp, "b@127.0.0.1", "")
	rb.waitEvent(t, 10*time.Second, NodeUp, "a@127.0.0.1", "")
	for _, e := range ra.snapshot() {
		if e.Kind == NodeUp && (e.Tags["role"] != "web" || e.Tags["v"] != "2") {
			t.Errorf("a's NodeUp tags %v", e.Tags)
		}
	}
	if l := b.Links(); len(l) != 1 || l[0].Tags["role"] != "db" {
		t.Errorf("b's links %+v", l)
	}
}

// FuzzHelloExtensions: any bytes after a hello's features parse without
// error or panic; tags, when found, are valid and re-encode to themselves.
func FuzzHelloExtensions(f *testing.F) {
	base := appendHello(nil, &hello{Incarnation: 1, MaxMessage: 1, Name: "a@h", Addr: "h:1"})
	f.Add([]byte{extTags, 0, 15, 2, 2, 'a', 'z', 1, '1', 4, 'r', 'o', 'l', 'e', 3, 'w', 'e', 'b'})
	f.Add([]byte{0x7f, 0, 2, 'x', 'y', extTags, 0, 3, 1, 1, 'k', 0})
	f.Add([]byte{0xde, 0xad, 0xbe, 0xef})
	f.Fuzz(func(t *testing.T, ext []byte) {
		h, err := parseHello(append(append([]byte{}, base...), ext...))
		if err != nil {
			t.Fatalf("extensions made the hello invalid: %v", err)
		}
		if h.Tags == "" {
			return
		}
		tags := decodeTags(h.Tags)
		if err := ValidateTags(tags); err != nil || encodeTags(tags) != h.Tags {
			t.Fatalf("tags %q: %v, re-encoded %q", h.Tags, err, encodeTags(tags))
		}
	})
}
