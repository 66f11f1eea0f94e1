package mcast

import (
	"errors"
	"net"
	"net/netip"
	"sync"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// TestReadSurvivesErrors makes the socket report an error (IP_RECVERR and
// an ICMP port unreachable for a datagram to a closed port on 127.0.0.1):
// Read tells ReadError and goes on to the next datagram.
func TestReadSurvivesErrors(t *testing.T) {
	lo := loopbackIface(t)
	var mu sync.Mutex
	var seen []error
	c := listen(t, Config{Group: groupA, ReadError: func(err error) {
		mu.Lock()
		seen = append(seen, err)
		mu.Unlock()
	}}, lo)
	rc, err := c.pc.(*net.UDPConn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var serr error
	if err := rc.Control(func(fd uintptr) { serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_IP, unix.IP_RECVERR, 1) }); err != nil || serr != nil {
		t.Fatal(err, serr)
	}
	closed, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := closed.LocalAddr().(*net.UDPAddr).AddrPort()
	closed.Close()
	send(t, c, lo, loopback, netip.AddrPortFrom(loopback, dead.Port()), "nobody")
	// The pending error would fail the next send on c too: send from another socket.
	other := listen(t, Config{Group: groupA, Port: c.Port()}, nil)
	send(t, other, lo, loopback, c.Group(), "after the error")
	if _, msg := readOne(t, c); msg != "after the error" {
		t.Fatalf("got %q", msg)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(seen) != 1 || !errors.Is(seen[0], syscall.ECONNREFUSED) {
		t.Errorf("ReadError saw %v, want one ECONNREFUSED", seen)
	}
}
