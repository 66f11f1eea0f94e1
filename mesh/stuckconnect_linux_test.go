package mesh

import (
	"net"
	"syscall"
	"testing"
	"time"
)

// fullListener listens on 127.0.0.1 with an accept queue of one and fills
// it: the kernel then drops every further SYN to the port, and a connect
// waits on its SYN retransmissions (every second on Linux 6.7+, else after
// 1, 3, 7 s) as it does towards a host cut off by a partition. close ends it (the port is
// free again).
func fullListener(t *testing.T) (addr string, close func()) {
	t.Helper()
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	closeFD := func() { syscall.Close(fd) }
	if err := syscall.SetsockoptInt(fd, syscall.SOL_SOCKET, syscall.SO_REUSEADDR, 1); err != nil {
		closeFD()
		t.Fatal(err)
	}
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		closeFD()
		t.Fatal(err)
	}
	if err := syscall.Listen(fd, 0); err != nil {
		closeFD()
		t.Fatal(err)
	}
	sa, err := syscall.Getsockname(fd)
	if err != nil {
		closeFD()
		t.Fatal(err)
	}
	addr = (&net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: sa.(*syscall.SockaddrInet4).Port}).String()
	var fillers []net.Conn
	close = func() {
		closeFD()
		for _, c := range fillers {
			c.Close()
		}
	}
	for range 4 {
		c, err := net.DialTimeout("tcp", addr, 300*time.Millisecond)
		if err != nil {
			return addr, close // the queue is full: this SYN was dropped
		}
		fillers = append(fillers, c)
	}
	close()
	t.Fatal("the accept queue of a listener with backlog 0 did not fill up")
	return "", nil
}

// TestStuckConnectRestarted: a dial whose connect waits on a SYN
// retransmission (the peer was out of reach when it started) is restarted
// when the peer is reported again (Connect), instead of holding the pair
// until the connect's next SYN or its timeout: the link comes up at once,
// ConnectRestarts counts it, DialFailures does not, and no backoff is left
// behind.
func TestStuckConnectRestarted(t *testing.T) {
	addr, closeFull := fullListener(t)
	defer closeFull()
	a, ra := startNode(t, "a@127.0.0.1", func(c *Config) {
		c.NoProbes = true
		c.HandshakeTimeout = 10 * time.Second // the connect waits up to this
	})
	t0 := time.Now()
	a.Connect("b@127.0.0.1", addr)
	// Past the first retransmission (1 s), also dropped; the next is 1 s
	// (Linux 6.7+) or 2 s later.
	time.Sleep(1200 * time.Millisecond)
	if s := a.Stats(); s.Dials != 1 || s.DialFailures != 0 {
		t.Fatalf("before the peer is back: Dials %d DialFailures %d, want 1 and 0 (one connect waiting)", s.Dials, s.DialFailures)
	}
	closeFull()
	b, _ := startNode(t, "b@127.0.0.1", func(c *Config) {
		c.NoProbes = true
		c.Listen = addr
	})
	heard := time.Now()
	a.Connect(b.Name(), addr) // the strategy reports b again
	ra.waitEvent(t, 10*time.Second, NodeUp, b.Name(), "")
	up := time.Since(heard)
	s := a.Stats()
	t.Logf("linked %v after b was reported again (%v after the first dial; its connect's next SYN was due at 2 or 3 s)", up, time.Since(t0))
	if s.ConnectRestarts != 1 || s.DialFailures != 0 {
		t.Fatalf("ConnectRestarts %d DialFailures %d, want 1 and 0", s.ConnectRestarts, s.DialFailures)
	}
	a.mu.Lock()
	st := a.addrDial[addr]
	a.mu.Unlock()
	if st != nil && !st.until.IsZero() {
		t.Fatalf("the restart left a backoff on %s", addr)
	}
}
