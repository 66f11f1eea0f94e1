package mcast

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Every test here sends only on "lo" (the interface index is given with
// each packet) from 127.0.0.1, with TTL 1, to admin-scoped groups.

var (
	groupA   = netip.MustParseAddr("239.255.77.1")
	groupB   = netip.MustParseAddr("239.255.77.2")
	loopback = netip.MustParseAddr("127.0.0.1")
)

const readLimit = 5 * time.Second

// loopbackIface returns the loopback interface.
func loopbackIface(t testing.TB) *net.Interface {
	t.Helper()
	ifs, err := net.Interfaces()
	if err != nil {
		t.Fatal(err)
	}
	for i := range ifs {
		if ifs[i].Flags&net.FlagLoopback != 0 && ifs[i].Flags&net.FlagUp != 0 {
			return &ifs[i]
		}
	}
	t.Skip("no loopback interface up")
	return nil
}

// listen opens a Conn for group on port (0: any) and joins it on ifi.
func listen(t testing.TB, cfg Config, ifi *net.Interface) *Conn {
	t.Helper()
	c, err := Listen(context.Background(), cfg)
	if err != nil {
		t.Fatalf("Listen %v: %v", cfg.Group, err)
	}
	t.Cleanup(func() { c.Close() })
	if ifi != nil {
		if err := c.Join(ifi); err != nil {
			t.Fatalf("join %v on %s: %v", cfg.Group, ifi.Name, err)
		}
	}
	return c
}

// readOne reads one datagram, failing the test after readLimit.
func readOne(t testing.TB, c *Conn) (Packet, string) {
	t.Helper()
	if err := c.SetReadDeadline(time.Now().Add(readLimit)); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 1500)
	p, err := c.Read(buf)
	if err != nil {
		t.Fatalf("read on %v: %v", c.Group(), err)
	}
	return p, string(buf[:p.N])
}

func send(t testing.TB, c *Conn, ifi *net.Interface, src netip.Addr, dst netip.AddrPort, msg string) {
	t.Helper()
	if err := c.WriteTo([]byte(msg), ifi.Index, src, dst); err != nil {
		t.Fatalf("send %q to %v on %s: %v", msg, dst, ifi.Name, err)
	}
}

func TestLoopbackSharedPort(t *testing.T) {
	lo := loopbackIface(t)
	a := listen(t, Config{Group: groupA}, lo)
	b := listen(t, Config{Group: groupA, Port: a.Port()}, lo)
	if a.Group() != netip.AddrPortFrom(groupA, uint16(a.Port())) || a.Port() == 0 {
		t.Fatalf("Group() = %v, Port() = %d", a.Group(), a.Port())
	}
	send(t, a, lo, loopback, a.Group(), "hello")
	for _, c := range []*Conn{a, b} {
		p, msg := readOne(t, c)
		want := Packet{N: 5, Dst: groupA, IfIndex: lo.Index, Src: netip.AddrPortFrom(loopback, uint16(a.Port()))}
		if msg != "hello" || p != want {
			t.Errorf("got %q %+v, want %+v", msg, p, want)
		}
	}
}

// TestOnlyJoinedGroups: with IP_MULTICAST_ALL off (Linux), a socket on the
// port does not get a group another socket joined.
func TestOnlyJoinedGroups(t *testing.T) {
	lo := loopbackIface(t)
	a := listen(t, Config{Group: groupA}, lo)
	b := listen(t, Config{Group: groupB, Port: a.Port()}, lo)
	send(t, a, lo, loopback, b.Group(), "to B")
	send(t, a, lo, loopback, a.Group(), "to A")
	// Datagrams on lo arrive in order: a's first is "to A" only if "to B"
	// never reached it.
	if p, msg := readOne(t, a); msg != "to A" || p.Dst != groupA {
		t.Errorf("A's socket got %q for %v first", msg, p.Dst)
	}
	if p, msg := readOne(t, b); msg != "to B" || p.Dst != groupB {
		t.Errorf("B's socket got %q for %v first", msg, p.Dst)
	}
}

func TestLeave(t *testing.T) {
	lo := loopbackIface(t)
	a := listen(t, Config{Group: groupA}, lo)
	b := listen(t, Config{Group: groupA, Port: a.Port()}, lo)
	if err := b.Leave(lo); err != nil {
		t.Fatal(err)
	}
	send(t, a, lo, loopback, a.Group(), "after leave")
	if _, msg := readOne(t, a); msg != "after leave" {
		t.Fatalf("a got %q", msg)
	}
	// A negative result needs a bound: a got it, so b would have by now.
	b.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
	if p, err := b.Read(make([]byte, 100)); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Errorf("b read %+v, %v after leaving", p, err)
	}
	if err := b.Join(lo); err != nil {
		t.Fatalf("join again: %v", err)
	}
	send(t, a, lo, loopback, a.Group(), "joined again")
	if _, msg := readOne(t, b); msg != "joined again" {
		t.Errorf("b got %q", msg)
	}
}

func TestListenErrors(t *testing.T) {
	held, err := net.ListenPacket("udp4", "0.0.0.0:0") // without SO_REUSEADDR
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	port := held.LocalAddr().(*net.UDPAddr).Port
	_, err = Listen(context.Background(), Config{Group: groupA, Port: port})
	if !errors.Is(err, ErrBind) || !errors.Is(err, syscall.EADDRINUSE) || !strings.Contains(err.Error(), fmt.Sprint(port)) {
		t.Errorf("port held without SO_REUSEADDR: %v", err)
	}
	for _, cfg := range []Config{
		{Group: netip.MustParseAddr("10.0.0.1")},
		{},
		{Group: groupA, TTL: 256},
		{Group: groupA, Port: 70000},
	} {
		if c, err := Listen(context.Background(), cfg); err == nil || errors.Is(err, ErrBind) {
			c.Close()
			t.Errorf("Listen(%+v) = %v", cfg, err)
		}
	}
}

func TestCloseUnblocksRead(t *testing.T) {
	c, err := Listen(context.Background(), Config{Group: groupA})
	if err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 1)
	go func() {
		_, err := c.Read(make([]byte, 100))
		errc <- err
	}()
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-errc:
		if !errors.Is(err, net.ErrClosed) {
			t.Errorf("Read after Close: %v", err)
		}
	case <-time.After(readLimit):
		t.Fatal("Read still blocked after Close")
	}
	if err := c.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if _, err := c.Read(make([]byte, 10)); !errors.Is(err, net.ErrClosed) {
		t.Errorf("Read on a closed Conn: %v", err)
	}
}

// TestReadQueued: datagrams queued before Read (one receive call may take
// several) come out one per Read, in order, each with its own length,
// destination, interface and source, also when a later Read gives a
// smaller buffer (the datagram is truncated to it) and when group and
// unicast datagrams alternate.
func TestReadQueued(t *testing.T) {
	lo := loopbackIface(t)
	c := listen(t, Config{Group: groupA}, lo)
	uni := netip.AddrPortFrom(loopback, uint16(c.Port()))
	const n = 3*readBatch + 5
	for i := range n {
		dst := c.Group()
		if i%3 == 2 {
			dst = uni
		}
		send(t, c, lo, loopback, dst, fmt.Sprintf("datagram %d %s", i, strings.Repeat("x", i)))
	}
	for i := range n {
		want := fmt.Sprintf("datagram %d %s", i, strings.Repeat("x", i))
		size := 1500
		if i == n-1 {
			size = 8
		}
		if err := c.SetReadDeadline(time.Now().Add(readLimit)); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, size)
		p, err := c.Read(buf)
		if err != nil {
			t.Fatalf("read %d: %v", i, err)
		}
		wantDst := groupA
		if i%3 == 2 {
			wantDst = loopback
		}
		if size < len(want) {
			want = want[:size]
		}
		wantP := Packet{N: len(want), Dst: wantDst, IfIndex: lo.Index, Src: uni}
		if got := string(buf[:p.N]); got != want || p != wantP {
			t.Fatalf("read %d: %q %+v, want %q %+v", i, got, p, want, wantP)
		}
	}
}

// BenchmarkRead: one datagram read per op, the socket's queue kept full
// (as under a flood) by sending a batch whenever Read has drained one.
func BenchmarkRead(b *testing.B) {
	lo := loopbackIface(b)
	c := listen(b, Config{Group: groupA}, lo)
	msg := []byte("MACULA_GOSSIP:flood@10.0.0.1:9100")
	buf := make([]byte, 2048)
	b.ReportAllocs()
	for i := range b.N {
		if i%readBatch == 0 {
			b.StopTimer()
			for range readBatch {
				if err := c.WriteTo(msg, lo.Index, loopback, c.Group()); err != nil {
					b.Fatal(err)
				}
			}
			b.StartTimer()
		}
		if _, err := c.Read(buf); err != nil {
			b.Fatal(err)
		}
	}
}
