package static

import (
	"errors"
	"slices"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/macula-io/cluster/discovery"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func names(ps []discovery.Peer) []string {
	var out []string
	for _, p := range ps {
		out = append(out, p.Node)
	}
	return out
}

func next(t *testing.T, ch <-chan []discovery.Peer) []string {
	t.Helper()
	select {
	case s := <-ch:
		return names(s)
	case <-time.After(5 * time.Second):
		t.Fatal("no report within 5s")
		return nil
	}
}

func TestStaticReports(t *testing.T) {
	s, err := New(Config{Nodes: []string{"b@127.0.0.1:2", "a@127.0.0.1:1", "self@127.0.0.1:3"}, ReconnectInterval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	ch := make(chan []discovery.Peer, 16)
	self, _ := discovery.ParseNode("self@127.0.0.1:3")
	if err := s.Start(self, func(p []discovery.Peer) { ch <- p }); err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if got := next(t, ch); !slices.Equal(got, []string{"a@127.0.0.1:1", "b@127.0.0.1:2"}) {
		t.Fatalf("first report %v", got)
	}
	if err := s.AddNode("c@127.0.0.1:4"); err != nil {
		t.Fatal(err)
	}
	if got := next(t, ch); !slices.Equal(got, []string{"a@127.0.0.1:1", "b@127.0.0.1:2", "c@127.0.0.1:4"}) {
		t.Fatalf("after add %v", got)
	}
	if name, ok := s.RemoveNode("a@127.0.0.1"); !ok || name != "a@127.0.0.1" {
		t.Fatalf("RemoveNode = %q %v", name, ok)
	}
	if got := next(t, ch); !slices.Equal(got, []string{"b@127.0.0.1:2", "c@127.0.0.1:4"}) {
		t.Fatalf("after remove %v", got)
	}
	if _, ok := s.RemoveNode("zz@127.0.0.1"); ok {
		t.Fatal("removing unknown node reported true")
	}
	if err := s.AddNode("bad node"); !errors.Is(err, discovery.ErrInvalidNode) {
		t.Fatalf("AddNode(bad) = %v, want ErrInvalidNode", err)
	}
}

func TestStaticReconnectInterval(t *testing.T) {
	s, err := New(Config{Nodes: []string{"a@127.0.0.1:1"}, ReconnectInterval: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ch := make(chan []discovery.Peer, 16)
	if err := s.Start(discovery.Peer{}, func(p []discovery.Peer) { ch <- p }); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 3; i++ { // initial report plus two periodic ones
		next(t, ch)
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
}

func TestStaticInvalid(t *testing.T) {
	if _, err := New(Config{Nodes: []string{"nohost"}}); !errors.Is(err, discovery.ErrInvalidNode) {
		t.Fatalf("New(invalid) = %v", err)
	}
}
