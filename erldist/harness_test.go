package erldist

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/macula-io/cluster/internal/erltest"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const testCookie = "erldist-test-cookie"

// needErlang, freePort and startEPMD are internal/erltest's.
var (
	needErlang = erltest.NeedErlang
	freePort   = erltest.FreeTCPPort
	startEPMD  = erltest.StartEPMD
)

type erlOpts struct {
	ticktime int    // net_ticktime seconds; 0 = 4
	connect  string // node to net_adm:ping at start
}

// startErl starts `erl -name name` with internal/erltest's agent on 127.0.0.1, on the given
// epmd port, and waits for "ready".
func startErl(t testing.TB, name string, epmdPort int, o erlOpts) *erltest.Node {
	t.Helper()
	return erltest.Start(t, erltest.Options{Name: name, Cookie: testCookie, Module: erltest.Agent,
		EPMDPort: epmdPort, TickTime: o.ticktime, Connect: o.connect})
}

// events records OnNodeUp/OnNodeDown in order.
type events struct {
	mu  sync.Mutex
	log []string
	sig chan struct{}
}

func newEvents() *events { return &events{sig: make(chan struct{}, 1)} }

func (ev *events) config(c *Config) {
	c.OnNodeUp = func(n string) { ev.add("up " + n) }
	c.OnNodeDown = func(n string, reason error) {
		r := "closed"
		if errors.Is(reason, ErrTickTimeout) {
			r = "tick"
		} else if errors.Is(reason, ErrRestarted) {
			r = "restarted"
		}
		ev.add("down " + n + " " + r)
	}
}

func (ev *events) add(s string) {
	ev.mu.Lock()
	ev.log = append(ev.log, s)
	ev.mu.Unlock()
	select {
	case ev.sig <- struct{}{}:
	default:
	}
}

func (ev *events) snapshot() []string {
	ev.mu.Lock()
	defer ev.mu.Unlock()
	return append([]string(nil), ev.log...)
}

// wait waits until the log has n entries and returns them.
func (ev *events) wait(t testing.TB, n int, timeout time.Duration) []string {
	t.Helper()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		if s := ev.snapshot(); len(s) >= n {
			return s
		}
		select {
		case <-ev.sig:
		case <-deadline.C:
			t.Fatalf("events: want %d, have %q", n, ev.snapshot())
		}
	}
}

func startGo(t testing.TB, name string, epmdPort int, mod func(*Config)) *Node {
	t.Helper()
	cfg := Config{Name: name, Cookie: testCookie, EPMDPort: epmdPort, TickTime: 4 * time.Second,
		Logger: slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))}
	if mod != nil {
		mod(&cfg)
	}
	n, err := Start(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close() })
	return n
}

type tWriter struct{ t testing.TB }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSuffix(string(p), "\n"))
	return len(p), nil
}

func recv(t testing.TB, m *Mailbox, timeout time.Duration) Message {
	t.Helper()
	select {
	case msg, ok := <-m.C():
		if !ok {
			t.Fatal("mailbox closed")
		}
		return msg
	case <-time.After(timeout):
		t.Fatalf("mailbox %s: nothing within %v", m.Name(), timeout)
	}
	return Message{}
}
