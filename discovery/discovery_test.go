package discovery

import (
	"errors"
	"strings"
	"testing"
)

func TestParseNode(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want Peer
		err  bool
	}{
		{in: "a@127.0.0.1", want: Peer{Node: "a@127.0.0.1", Name: "a@127.0.0.1"}},
		{in: "node1@10.0.0.5:9100", want: Peer{Node: "node1@10.0.0.5:9100", Name: "node1@10.0.0.5", Addr: "10.0.0.5:9100"}},
		{in: "n@[::1]:9100", want: Peer{Node: "n@[::1]:9100", Name: "n@::1", Addr: "[::1]:9100"}},
		{in: "n@host.example:1", want: Peer{Node: "n@host.example:1", Name: "n@host.example", Addr: "host.example:1"}},
		{in: "n@::1", want: Peer{Node: "n@::1", Name: "n@::1"}},
		{in: "", err: true},
		{in: "noat", err: true},
		{in: "@host", err: true},
		{in: "a@", err: true},
		{in: "a@b@c", err: true},
		{in: "a@h:0", err: true},
		{in: "a@h:65536", err: true},
		{in: "a@h:x", err: true},
		{in: "a@[::1]", err: true},
		{in: "a b@h", err: true},
		{in: "a|b@h", err: true},
		{in: "a@h\x00", err: true},
		{in: "a@" + strings.Repeat("h", 254), err: true},
	} {
		got, err := ParseNode(tc.in)
		if tc.err {
			if !errors.Is(err, ErrInvalidNode) {
				t.Errorf("ParseNode(%q) = %+v, %v; want ErrInvalidNode", tc.in, got, err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("ParseNode(%q) = %+v, %v; want %+v", tc.in, got, err, tc.want)
		}
		if got.Dialable() != (tc.want.Addr != "") {
			t.Errorf("Dialable(%q) wrong", tc.in)
		}
	}
}

func TestFormatNodeRoundTrip(t *testing.T) {
	for _, name := range []string{"a@127.0.0.1", "b@::1", "c@host"} {
		s := FormatNode(name, 9100)
		p, err := ParseNode(s)
		if err != nil || p.Name != name || !p.Dialable() {
			t.Errorf("FormatNode(%q) = %q -> %+v, %v", name, s, p, err)
		}
	}
}

func FuzzParseNode(f *testing.F) {
	for _, s := range []string{"a@127.0.0.1", "node1@10.0.0.5:9100", "n@[::1]:1", "x", "a@b:c:d"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		p, err := ParseNode(s)
		if err != nil {
			return
		}
		if p.Node != s || len(s) > MaxNodeLen {
			t.Fatalf("ParseNode(%q) = %+v", s, p)
		}
		if p.Dialable() {
			if _, err := ParseNode(FormatNode(p.Name, 1)); err != nil {
				t.Fatalf("round trip of %q: %v", s, err)
			}
		}
	})
}
