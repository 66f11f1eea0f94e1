package static

import (
	"context"
	"errors"
	"slices"
	"testing"

	"go.uber.org/goleak"

	"github.com/macula-io/cluster/discovery"
	"github.com/macula-io/cluster/internal/disctest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestStaticReports(t *testing.T) {
	s, err := New(Config{Nodes: []string{"b@127.0.0.1:2", "a@127.0.0.1:1", "self@127.0.0.1:3", "127.0.0.1:7"}})
	if err != nil {
		t.Fatal(err)
	}
	rec := disctest.New()
	self, _ := discovery.ParseNode("self@127.0.0.1:3")
	if err := s.Start(context.Background(), self, rec); err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	want := []string{"127.0.0.1:7", "a@127.0.0.1 at 127.0.0.1:1", "b@127.0.0.1 at 127.0.0.1:2"}
	if got := rec.Keys(); !slices.Equal(got, want) {
		t.Fatalf("first report %v, want %v", got, want)
	}
	if err := s.AddNode("c@127.0.0.1:4"); err != nil {
		t.Fatal(err)
	}
	if got := rec.Keys(); !slices.Contains(got, "c@127.0.0.1 at 127.0.0.1:4") || len(got) != 4 {
		t.Fatalf("after add %v", got)
	}
	if p, ok := s.RemoveNode("a@127.0.0.1"); !ok || p.Name != "a@127.0.0.1" || p.Addr != "127.0.0.1:1" {
		t.Fatalf("RemoveNode = %+v %v", p, ok)
	}
	if p, ok := s.RemoveNode("127.0.0.1:7"); !ok || p.Addr != "127.0.0.1:7" {
		t.Fatalf("RemoveNode(addr) = %+v %v", p, ok)
	}
	want = []string{"b@127.0.0.1 at 127.0.0.1:2", "c@127.0.0.1 at 127.0.0.1:4"}
	if got := rec.Keys(); !slices.Equal(got, want) {
		t.Fatalf("after remove %v, want %v", got, want)
	}
	if _, ok := s.RemoveNode("zz@127.0.0.1"); ok {
		t.Fatal("removing unknown node reported true")
	}
	if err := s.AddNode("bad node"); !errors.Is(err, discovery.ErrInvalidNode) {
		t.Fatalf("AddNode(bad) = %v, want ErrInvalidNode", err)
	}
	// Each change is reported once: no repeat of unchanged entries.
	if n := len(rec.Calls()); n != 3+1+2 {
		t.Fatalf("calls %q", rec.Calls())
	}
}

func TestStaticLifecycle(t *testing.T) {
	s, err := New(Config{Nodes: []string{"a@127.0.0.1:1"}})
	if err != nil {
		t.Fatal(err)
	}
	rec := disctest.New()
	if err := s.Start(context.Background(), discovery.Peer{}, rec); err != nil {
		t.Fatal(err)
	}
	if err := s.Start(context.Background(), discovery.Peer{}, rec); !errors.Is(err, discovery.ErrStarted) {
		t.Fatalf("second Start = %v, want ErrStarted", err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.AddNode("b@127.0.0.1:2"); !errors.Is(err, ErrClosed) {
		t.Fatalf("AddNode after Close = %v, want ErrClosed", err)
	}
	if err := s.Close(); err != nil {
		t.Fatal("second Close:", err)
	}
	if err := s.Start(context.Background(), discovery.Peer{}, rec); !errors.Is(err, ErrClosed) {
		t.Fatalf("Start after Close = %v, want ErrClosed", err)
	}
}

func TestStaticInvalid(t *testing.T) {
	for _, n := range []string{"nohost", "h:0", "a b@h:1"} {
		if _, err := New(Config{Nodes: []string{n}}); !errors.Is(err, discovery.ErrInvalidNode) {
			t.Errorf("New(%q) = %v", n, err)
		}
	}
}
