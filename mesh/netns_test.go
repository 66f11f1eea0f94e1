//go:build linux

package mesh

import (
	"context"
	"fmt"
	"net"
	"os"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/macula-io/cluster/internal/netlab"
)

// The relay tests of issue 12 in network namespaces: two nodes in two
// namespaces and the relay in a third one, each a process of its own (this
// test binary re-executed, netns_helper_test.go). Each node has a
// blackhole route to the other's address, so the relay is the only path
// between them. Needs root and iproute2: skipped without, except with
// CI=true (netlab.New fails then).
//
//	ID-h0: node a, 198.18.0.10   ID-h1: relay, 198.18.0.11   ID-h2: node b, 198.18.0.12
//	a dials b at 198.18.0.11:port; the relay dials 198.18.0.12:port.

// netnsLab is a three-host lab whose hosts 0 and 2 reach each other only
// through host 1.
func netnsLab(t *testing.T) *netlab.Lab {
	t.Helper()
	lab := netlab.New(t, netlab.Options{Hosts: 3})
	a, b := lab.Hosts[0], lab.Hosts[2]
	for _, r := range []struct{ h, other *netlab.Host }{{a, b}, {b, a}} {
		out, err := r.h.Command(t.Context(), "ip", "route", "add", "blackhole", r.other.IP.String()+"/32").CombinedOutput()
		if err != nil {
			t.Fatalf("%s: blackhole route to %s: %v: %s", r.h.NS, r.other.IP, err, out)
		}
	}
	return lab
}

// helperProc runs this test binary in host h as a netns helper (mode and
// its flags) and waits for its "ready" line.
func helperProc(t *testing.T, h *netlab.Host, args ...string) *netlab.Proc {
	t.Helper()
	env := []string{netnsHelperEnv + "=1", "GORACE=atexit_sleep_ms=0"}
	p, err := h.Start(t.Context(), env, os.Args[0], args...)
	if err != nil {
		t.Fatal(err)
	}
	waitLine(t, p, "ready", time.Time{}, func(netlab.Line) bool { return true })
	return p
}

// waitLine waits up to 20 s for a line of p with this event, read after
// since, for which match is true.
func waitLine(t *testing.T, p *netlab.Proc, event string, since time.Time, match func(netlab.Line) bool) netlab.Line {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	l, err := p.WaitFor(ctx, func(l netlab.Line) bool { return l.Event() == event && !l.At.Before(since) && match(l) })
	if err != nil {
		t.Fatalf("waiting for %s: %v", event, err)
	}
	return l
}

// usr1 sends SIGUSR1 to p and returns the time just before.
func usr1(t *testing.T, p *netlab.Proc) time.Time {
	t.Helper()
	now := time.Now()
	if err := p.Signal(syscall.SIGUSR1); err != nil {
		t.Fatalf("signal %s: %v", p, err)
	}
	return now
}

// sendNext makes node p send its next payload and waits until it did.
func sendNext(t *testing.T, p *netlab.Proc) {
	t.Helper()
	waitLine(t, p, "sent", usr1(t, p), func(netlab.Line) bool { return true })
}

// stopped stops p (SIGTERM) and returns its lines: all of them, since the
// process has exited and its output was read to the end.
func stopped(t *testing.T, p *netlab.Proc) []netlab.Line {
	t.Helper()
	if err := p.Stop(); err != nil {
		t.Fatalf("stop %s: %v; stderr: %s", p, err, p.Stderr())
	}
	return p.Events()
}

func linesOf(ls []netlab.Line, event string) []netlab.Line {
	var out []netlab.Line
	for _, l := range ls {
		if l.Event() == event {
			out = append(out, l)
		}
	}
	return out
}

// TestRelayNetns: for each record cipher and each attack, node a links to
// node b through the tampering relay, sends "hello-1" (forwarded), then the
// relay is armed and a sends "secret-2": the relay flips one bit of its
// record, injects a forged record before it, or replays it. b never
// accepts an altered, injected or replayed message, closes the link and
// counts exactly one ProtocolErrors["tampered"] (and its warning names
// the reason); no message crosses the relay in clear.
func TestRelayNetns(t *testing.T) {
	lab := netnsLab(t)
	ha, hr, hb := lab.Hosts[0], lab.Hosts[1], lab.Hosts[2]
	port := 9100
	for _, c := range []string{"aes", "chacha"} {
		for _, tc := range []struct {
			attack string
			want   []string // payloads b accepts, in order
		}{
			{"flip", []string{"hello-1"}},
			{"inject", []string{"hello-1"}},
			{"replay", []string{"hello-1", "secret-2"}},
		} {
			port++
			t.Run(c+"/"+tc.attack, func(t *testing.T) {
				if c == "aes" && !hasAESHardware() {
					t.Skip("no AES hardware")
				}
				bName, aName := "b@"+hb.IP.String(), "a@"+ha.IP.String()
				addr := func(h *netlab.Host) string { return fmt.Sprintf("%s:%d", h.IP, port) }
				b := helperProc(t, hb, "node", "-name", bName, "-listen", addr(hb), "-cipher", c)
				r := helperProc(t, hr, "relay", "-listen", addr(hr), "-target", addr(hb), "-mode", "mitm",
					"-attack", tc.attack, "-forbid", "hello-1,secret-2")
				a := helperProc(t, ha, "node", "-name", aName, "-listen", addr(ha), "-cipher", c,
					"-peer", bName, "-via", addr(hr), "-send", "hello-1,secret-2")
				all := func(netlab.Line) bool { return true }
				waitLine(t, b, "nodeup", time.Time{}, func(l netlab.Line) bool { return l.Node() == aName })
				waitLine(t, a, "nodeup", time.Time{}, func(l netlab.Line) bool { return l.Node() == bName })

				sendNext(t, a)
				waitLine(t, b, "message", time.Time{}, func(l netlab.Line) bool { return l.Str("payload") == "hello-1" })
				since := usr1(t, r)
				waitLine(t, r, "armed", since, all)
				sendNext(t, a)
				waitLine(t, r, "fired", since, all)
				waitLine(t, b, "nodedown", since, func(l netlab.Line) bool {
					return l.Node() == aName && l.Str("reason") == string(ReasonClosed)
				})
				waitLine(t, b, "log", since, func(l netlab.Line) bool {
					return l.Str("msg") == "mesh: protocol error, closing link" && l.Str("reason") == string(HSTampered)
				})

				// Relay first, so that nothing more can reach b; then b's
				// output is complete once it has exited.
				seen := linesOf(stopped(t, r), "seen")
				stopped(t, a)
				bl := stopped(t, b)
				if len(seen) != 1 || seen[0].Str("leak") != "false" {
					t.Errorf("relay: %v: a message crossed the relay in clear", seen)
				}
				var got []string
				for _, l := range linesOf(bl, "message") {
					if l.Str("from") != aName {
						t.Errorf("message from %q", l.Str("from"))
					}
					got = append(got, l.Str("payload"))
				}
				if !slices.Equal(got, tc.want) {
					t.Errorf("b accepted %q, want %q", got, tc.want)
				}
				var warns int
				for _, l := range linesOf(bl, "log") {
					switch l.Str("msg") {
					case "mesh: protocol error, closing link":
						warns++
					case "mesh: accepted":
						// The relay is on the path: b sees its address.
						if host, _, _ := net.SplitHostPort(l.Str("remote")); host != hr.IP.String() {
							t.Errorf("b accepted a connection from %s, not from the relay", l.Str("remote"))
						}
					}
				}
				if warns != 1 {
					t.Errorf("%d protocol error warnings, want 1", warns)
				}
				st := linesOf(bl, "stats")
				if len(st) != 1 || st[0].Str("protocol_errors") != `{"tampered":1}` {
					t.Errorf("b's stats %v, want protocol_errors {tampered: 1}", st)
				}
			})
		}
	}
}

// TestRelayTLSNetns: nodes run with TLS certificates of their own and no CA
// (the CLI's --tls-cert/--tls-key alone). A relay that only forwards bytes
// is invisible (control); a relay that terminates TLS on both sides with a
// certificate of its own completes TLS with each node, but the cookie
// proof is bound to the TLS session, so the mesh handshake fails on both
// nodes (bad_cookie) and no link comes up.
func TestRelayTLSNetns(t *testing.T) {
	lab := netnsLab(t)
	ha, hr, hb := lab.Hosts[0], lab.Hosts[1], lab.Hosts[2]
	bName := "b@" + hb.IP.String()
	b := helperProc(t, hb, "node", "-name", bName, "-listen", hb.IP.String()+":9100", "-tls")

	// Control: a byte-forwarding relay.
	fwd := helperProc(t, hr, "relay", "-listen", hr.IP.String()+":9101", "-target", hb.IP.String()+":9100", "-mode", "fwd")
	aName := "a@" + ha.IP.String()
	a := helperProc(t, ha, "node", "-name", aName, "-listen", ha.IP.String()+":9100", "-tls",
		"-peer", bName, "-via", hr.IP.String()+":9101")
	waitLine(t, b, "nodeup", time.Time{}, func(l netlab.Line) bool { return l.Node() == aName })
	waitLine(t, a, "nodeup", time.Time{}, func(l netlab.Line) bool { return l.Node() == bName })
	since := time.Now()
	stopped(t, a)
	waitLine(t, b, "nodedown", since, func(l netlab.Line) bool {
		return l.Node() == aName && l.Str("reason") == string(ReasonLeft)
	})
	stopped(t, fwd)

	// The TLS-terminating relay.
	r := helperProc(t, hr, "relay", "-listen", hr.IP.String()+":9100", "-target", hb.IP.String()+":9100", "-mode", "tls")
	cName := "c@" + ha.IP.String()
	since = time.Now()
	c := helperProc(t, ha, "node", "-name", cName, "-listen", ha.IP.String()+":9102", "-tls",
		"-peer", bName, "-via", hr.IP.String()+":9100")
	badCookie := func(l netlab.Line) bool {
		return l.Str("msg") == "mesh: rejected connection" && l.Str("reason") == string(HSBadCookie)
	}
	// Each node sees the relay as its peer: the relay is on the path.
	fromRelay := func(l netlab.Line) bool {
		host, _, _ := net.SplitHostPort(l.Str("remote"))
		return badCookie(l) && host == hr.IP.String()
	}
	waitLine(t, b, "log", since, fromRelay)
	waitLine(t, c, "log", since, fromRelay)
	stopped(t, c)
	stopped(t, r)
	bl := stopped(t, b)
	cl := c.Events()
	for _, l := range append(bl, cl...) {
		if (l.Event() == "nodeup" || l.Event() == "message") && !l.At.Before(since) {
			t.Errorf("through a TLS-terminating relay: %s", l)
		}
	}
	cst, bst := linesOf(cl, "stats"), linesOf(bl, "stats")
	if len(cst) != 1 || len(bst) != 1 {
		t.Fatalf("stats lines: c %v b %v", cst, bst)
	}
	for _, st := range []netlab.Line{cst[0], bst[0]} {
		hf := st.Str("handshake_failures")
		if !strings.Contains(hf, `"bad_cookie":`) || strings.Contains(hf, `"tls":`) {
			t.Errorf("handshake failures %s: want bad_cookie and no tls (the relay passes TLS)", hf)
		}
	}
}
