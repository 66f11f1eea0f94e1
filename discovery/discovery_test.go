package discovery

import (
	"errors"
	"slices"
	"strings"
	"testing"
)

func TestParseNode(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want Peer
		err  bool
	}{
		{in: "a@127.0.0.1", want: Peer{Name: "a@127.0.0.1"}},
		{in: "node1@10.0.0.5:9100", want: Peer{Name: "node1@10.0.0.5", Addr: "10.0.0.5:9100"}},
		{in: "n@[::1]:9100", want: Peer{Name: "n@::1", Addr: "[::1]:9100"}},
		{in: "n@host.example:1", want: Peer{Name: "n@host.example", Addr: "host.example:1"}},
		{in: "n@::1", want: Peer{Name: "n@::1"}},
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
		s := FormatNode(name, "x:9100")
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
		if len(s) > MaxNodeLen || (!p.Dialable() && p.Name != s) {
			t.Fatalf("ParseNode(%q) = %+v", s, p)
		}
		if p.Dialable() {
			if q, err := ParseNode(FormatNode(p.Name, p.Addr)); err != nil || q != p {
				t.Fatalf("round trip of %q: %v", s, err)
			}
		}
	})
}

func TestParseEntry(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want Peer
		err  bool
	}{
		{in: "10.0.0.5:9100", want: Peer{Addr: "10.0.0.5:9100"}},
		{in: "[::1]:9100", want: Peer{Addr: "[::1]:9100"}},
		{in: "host.example:1", want: Peer{Addr: "host.example:1"}},
		{in: "n@10.0.0.5:9100", want: Peer{Name: "n@10.0.0.5", Addr: "10.0.0.5:9100"}},
		{in: "n@h", want: Peer{Name: "n@h"}},
		{in: "10.0.0.5", err: true},
		{in: ":9100", err: true},
		{in: "h:0", err: true},
		{in: "h:x", err: true},
		{in: "", err: true},
	} {
		got, err := ParseEntry(tc.in)
		if tc.err {
			if !errors.Is(err, ErrInvalidNode) {
				t.Errorf("ParseEntry(%q) = %+v, %v; want ErrInvalidNode", tc.in, got, err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("ParseEntry(%q) = %+v, %v; want %+v", tc.in, got, err, tc.want)
		}
	}
}

type recSink struct{ calls []string }

func (r *recSink) Found(p Peer) { r.calls = append(r.calls, "found "+p.String()) }
func (r *recSink) Gone(p Peer)  { r.calls = append(r.calls, "gone "+p.String()) }

func TestSetReportsChangesOnly(t *testing.T) {
	var r recSink
	s := NewSet(&r)
	a := Peer{Name: "a@h", Addr: "h:1"}
	b := Peer{Addr: "h:2"}
	check := func(step string, peers []Peer, want ...string) {
		t.Helper()
		r.calls = nil
		s.Report(peers)
		slices.Sort(r.calls)
		slices.Sort(want)
		if !slices.Equal(r.calls, want) {
			t.Errorf("%s: calls %q, want %q", step, r.calls, want)
		}
	}
	check("first", []Peer{a, b}, "found a@h at h:1", "found h:2")
	check("same", []Peer{b, a})
	a2 := Peer{Name: "a@h", Addr: "h:3"}
	check("moved", []Peer{a2, b}, "found a@h at h:3")
	check("gone", []Peer{a2}, "gone h:2")
	check("empty", nil, "gone a@h at h:3")
	if s.Len() != 0 {
		t.Errorf("Len = %d", s.Len())
	}
}

func TestLifecycle(t *testing.T) {
	var l Lifecycle
	boom := errors.New("boom")
	if err := l.Start(func() error { return boom }); err != boom {
		t.Fatalf("failing begin: %v", err)
	}
	if err := l.Start(nil); err != nil {
		t.Fatalf("Start after failed begin: %v", err)
	}
	if err := l.Start(nil); !errors.Is(err, ErrStarted) {
		t.Fatalf("second Start: %v", err)
	}
	if !l.Close() || l.Close() {
		t.Fatal("Close must report true once")
	}
	if err := l.Start(nil); !errors.Is(err, ErrClosed) {
		t.Fatalf("Start after Close: %v", err)
	}
	var never Lifecycle
	if never.Close() {
		t.Fatal("Close before Start must not ask to stop anything")
	}
}
