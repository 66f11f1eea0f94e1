//go:build linux

package netlab

import (
	"errors"
	"fmt"
	"math"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// nsUDP opens a UDP socket on h.IP (any port) inside h's namespace: a
// socket stays in the namespace it was made in, so the test can use it from
// any goroutine.
func nsUDP(t testing.TB, h *Host) *net.UDPConn {
	t.Helper()
	var c *net.UDPConn
	err := InNetns(h.NS, func() error {
		var err error
		c, err = net.ListenUDP("udp4", &net.UDPAddr{IP: h.IP.AsSlice()})
		return err
	})
	if err != nil {
		t.Fatalf("udp socket in %s: %v", h, err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// udpRTT sends a datagram from a to b, echoes it from b back to a and
// returns the round-trip time.
func udpRTT(a, b *net.UDPConn, timeout time.Duration) (time.Duration, error) {
	token := fmt.Sprintf("rtt %d", time.Now().UnixNano())
	buf := make([]byte, 1500)
	start := time.Now()
	deadline := start.Add(timeout)
	if _, err := a.WriteToUDP([]byte(token), b.LocalAddr().(*net.UDPAddr)); err != nil {
		return 0, err
	}
	_ = b.SetReadDeadline(deadline)
	for {
		n, from, err := b.ReadFromUDP(buf)
		if err != nil {
			return 0, fmt.Errorf("%s -> %s: %w", a.LocalAddr(), b.LocalAddr(), err)
		}
		if string(buf[:n]) == token {
			if _, err := b.WriteToUDP(buf[:n], from); err != nil {
				return 0, err
			}
			break
		}
	}
	_ = a.SetReadDeadline(deadline)
	for {
		n, err := a.Read(buf)
		if err != nil {
			return 0, fmt.Errorf("%s -> %s: %w", b.LocalAddr(), a.LocalAddr(), err)
		}
		if string(buf[:n]) == token {
			return time.Since(start), nil
		}
	}
}

// minRTT is the smallest of n round trips (the least disturbed by load).
func minRTT(t testing.TB, a, b *net.UDPConn, n int) time.Duration {
	t.Helper()
	best := time.Duration(math.MaxInt64)
	for range n {
		rtt, err := udpRTT(a, b, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		best = min(best, rtt)
	}
	return best
}

// udpProbes sends n datagrams from a to b and returns how many arrived.
func udpProbes(t testing.TB, a, b *net.UDPConn, n int) int {
	t.Helper()
	prefix := fmt.Sprintf("probe %d ", time.Now().UnixNano())
	got := make(chan int, 1)
	quiet := make(chan struct{})
	go func() {
		buf := make([]byte, 1500)
		seen := make(map[string]bool)
		for {
			_ = b.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
			m, err := b.Read(buf)
			if err != nil {
				select {
				case <-quiet: // every probe sent, and 500 ms of silence
					got <- len(seen)
					return
				default:
					continue
				}
			}
			if s := string(buf[:m]); strings.HasPrefix(s, prefix) {
				seen[s] = true
			}
		}
	}()
	dst := b.LocalAddr().(*net.UDPAddr)
	for i := range n {
		if _, err := a.WriteToUDP([]byte(prefix+fmt.Sprint(i)), dst); err != nil {
			t.Errorf("probe %d: %v", i, err)
		}
		if i%20 == 19 {
			time.Sleep(time.Millisecond) // do not flood the receive buffer
		}
	}
	close(quiet)
	return <-got
}

func TestImpairPing(t *testing.T) {
	t.Parallel()
	l := New(t, Options{Hosts: 3, Impair: true})
	if !l.Impairable() {
		t.Fatal("Impairable() = false")
	}
	h := l.Hosts
	out, err := h[1].Command(t.Context(), "ip", "-d", "link", "show", "eth0").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "tun type tap") {
		t.Errorf("eth0 in %s: %q %v, want a TAP", h[1], out, err)
	}
	out, err = exec.Command("ip", "-n", l.SwitchNS(), "-br", "link", "show", "master", "br0").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "t0") || !strings.Contains(string(out), "t2") {
		t.Errorf("br0 ports: %q %v", out, err)
	}
	checkRootNamespace(t)
	var wg sync.WaitGroup
	for _, p := range [][2]int{{0, 1}, {1, 2}, {2, 0}} {
		for _, v6 := range []bool{false, true} {
			wg.Go(func() {
				dst := h[p[1]].IP
				if v6 {
					dst = h[p[1]].IP6
				}
				if err := ping(t, h[p[0]], dst, 5*time.Second); err != nil {
					t.Error(err)
				}
			})
		}
	}
	wg.Wait()
	st := h[0].ImpairStats()
	if st.Egress.Forwarded == 0 || st.Ingress.Forwarded == 0 || st.Egress.DroppedLoss != 0 {
		t.Errorf("stats after pings: %+v", st)
	}
}

func TestImpairMulticast(t *testing.T) {
	t.Parallel()
	l := New(t, Options{Hosts: 3, Impair: true})
	testMulticast(t, l, "230.1.1.251", "ff02::4d41")
}

func TestImpairLossDelay(t *testing.T) {
	t.Parallel()
	l := New(t, Options{Hosts: 2, Impair: true})
	a, b := l.Hosts[0], l.Hosts[1]
	ua, ub := nsUDP(t, a), nsUDP(t, b)
	// Warm up: neighbours resolved before any loss.
	if _, err := udpRTT(ua, ub, 5*time.Second); err != nil {
		t.Fatal(err)
	}

	// Loss 1 blocks everything, Loss 0 lets everything through again.
	if err := a.Impair(Impairment{Loss: 1}); err != nil {
		t.Fatal(err)
	}
	if got := udpProbes(t, ua, ub, 20); got != 0 {
		t.Errorf("loss 1: %d of 20 probes arrived", got)
	}
	mustNotPing(t, b, a.IP)
	if st := a.ImpairStats(); st.Egress.DroppedLoss < 20 || st.Ingress.DroppedLoss == 0 {
		t.Errorf("stats after loss 1: %+v", st)
	}
	if err := a.Impair(Impairment{Loss: 0}); err != nil {
		t.Fatal(err)
	}
	if eg, in := a.Impairment(); !eg.IsZero() || !in.IsZero() {
		t.Errorf("Impairment() after Loss 0: %v %v", eg, in)
	}
	if _, err := udpRTT(ua, ub, 5*time.Second); err != nil {
		t.Fatalf("after loss 0: %v", err)
	}

	// Delay 100ms in both directions of a: a round trip takes 200 ms.
	if err := a.Impair(Impairment{Delay: 100 * time.Millisecond}); err != nil {
		t.Fatal(err)
	}
	if rtt := minRTT(t, ua, ub, 3); rtt < 180*time.Millisecond || rtt > 2*time.Second {
		t.Errorf("RTT with delay 100ms both ways: %v, want about 200ms", rtt)
	} else {
		t.Logf("RTT with 100ms each way: %v", rtt)
	}
	if err := a.ClearImpair(); err != nil {
		t.Fatal(err)
	}
	if rtt := minRTT(t, ua, ub, 3); rtt > 150*time.Millisecond {
		t.Errorf("RTT after ClearImpair: %v", rtt)
	}

	// Loss 0.5: about half of 400 one-way probes (a's egress only).
	if err := a.Impair(Impairment{Loss: 0.5}); err != nil {
		t.Fatal(err)
	}
	before := a.ImpairStats().Egress.DroppedLoss
	got := udpProbes(t, ua, ub, 400)
	lost := 1 - float64(got)/400
	if lost < 0.25 || lost > 0.75 {
		t.Errorf("loss 0.5: %d of 400 probes arrived (%.0f%% lost)", got, lost*100)
	}
	if d := a.ImpairStats().Egress.DroppedLoss - before; d < 100 {
		t.Errorf("DroppedLoss grew by %d, want about 200", d)
	}
	t.Logf("loss 0.5: %d of 400 arrived", got)
	if err := a.ClearImpair(); err != nil {
		t.Fatal(err)
	}
	mustPing(t, b, a.IP)

	if err := a.Impair(Impairment{Loss: 1.5}); err == nil {
		t.Error("Impair(Loss 1.5): no error")
	}
	if err := a.Impair(Impairment{Loss: math.NaN()}); err == nil {
		t.Error("Impair(Loss NaN): no error")
	}
	if err := a.Impair(Impairment{Delay: -time.Second}); err == nil {
		t.Error("Impair(Delay -1s): no error")
	}
}

func TestImpairJitter(t *testing.T) {
	t.Parallel()
	l := New(t, Options{Hosts: 2, Impair: true})
	a, b := l.Hosts[0], l.Hosts[1]
	ua, ub := nsUDP(t, a), nsUDP(t, b)
	if _, err := udpRTT(ua, ub, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	if err := a.ImpairEgress(Impairment{Delay: 30 * time.Millisecond, Jitter: 30 * time.Millisecond}); err != nil {
		t.Fatal(err)
	}
	if got := udpProbes(t, ua, ub, 200); got != 200 {
		t.Errorf("jitter without loss: %d of 200 arrived", got)
	}
	// Round trips vary between 0 and 60 ms (plus overhead).
	var lo, hi time.Duration = time.Hour, 0
	for range 20 {
		rtt, err := udpRTT(ua, ub, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		lo, hi = min(lo, rtt), max(hi, rtt)
	}
	if hi-lo < 5*time.Millisecond || lo > 60*time.Millisecond || hi > 5*time.Second {
		t.Errorf("RTT with delay 30ms jitter 30ms: %v..%v", lo, hi)
	}
	t.Logf("RTT with delay 30ms jitter 30ms: %v..%v", lo, hi)
}

func TestImpairCutRestore(t *testing.T) {
	t.Parallel()
	l := New(t, Options{Hosts: 2, Impair: true})
	a, b := l.Hosts[0], l.Hosts[1]
	mustPing(t, a, b.IP)
	if err := b.Cut(); err != nil {
		t.Fatal(err)
	}
	out, err := b.Command(t.Context(), "ip", "link", "show", "eth0").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "NO-CARRIER") {
		t.Errorf("eth0 of a cut host: %q %v", out, err)
	}
	var wg sync.WaitGroup
	wg.Go(func() { mustNotPing(t, a, b.IP) })
	wg.Go(func() { mustNotPing(t, b, a.IP6) })
	wg.Wait()
	if st := b.ImpairStats(); st.Ingress.DroppedCut == 0 {
		t.Errorf("stats while cut: %+v", st)
	}
	if err := b.Restore(); err != nil {
		t.Fatal(err)
	}
	wg.Go(func() { mustPing(t, a, b.IP) })
	wg.Go(func() { mustPing(t, b, a.IP6) })
	wg.Wait()
	// Frames queued when the cable is cut are lost, even after Restore.
	ua, ub := nsUDP(t, a), nsUDP(t, b)
	if _, err := udpRTT(ua, ub, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	if err := a.ImpairEgress(Impairment{Delay: 300 * time.Millisecond}); err != nil {
		t.Fatal(err)
	}
	if _, err := ua.WriteToUDP([]byte("queued"), ub.LocalAddr().(*net.UDPAddr)); err != nil {
		t.Fatal(err)
	}
	for i := 0; a.ImpairStats().Egress.Queued == 0; i++ {
		if i == 500 {
			t.Fatal("the datagram never reached the delay queue")
		}
		time.Sleep(time.Millisecond)
	}
	if err := a.Cut(); err != nil {
		t.Fatal(err)
	}
	if err := a.Restore(); err != nil {
		t.Fatal(err)
	}
	_ = ub.SetReadDeadline(time.Now().Add(800 * time.Millisecond))
	buf := make([]byte, 100)
	if n, err := ub.Read(buf); err == nil {
		t.Errorf("frame queued before a cut arrived: %q", buf[:n])
	}
}

func TestImpairPartitionHeal(t *testing.T) {
	t.Parallel()
	testPartitionHeal(t, New(t, Options{Hosts: 4, Impair: true}))
}

func TestImpairNetem(t *testing.T) {
	t.Parallel()
	l := New(t, Options{Hosts: 2, Impair: true})
	a, b := l.Hosts[0], l.Hosts[1]
	if err := a.Netem("loss 20% delay 10ms 50ms"); err != nil {
		t.Fatal(err)
	}
	eg, in := a.Impairment()
	if want := (Impairment{Loss: 0.2, Delay: 10 * time.Millisecond, Jitter: 50 * time.Millisecond}); eg != want || !in.IsZero() {
		t.Errorf("after Netem: egress %v ingress %v, want egress %v", eg, in, want)
	}
	if err := a.Netem("loss 100%"); err != nil { // replaces
		t.Fatal(err)
	}
	mustNotPing(t, a, b.IP)
	if err := a.ClearNetem(); err != nil {
		t.Fatal(err)
	}
	if eg, _ := a.Impairment(); !eg.IsZero() {
		t.Errorf("after ClearNetem: %v", eg)
	}
	mustPing(t, a, b.IP)
	if err := a.Netem("duplicate 1%"); !errors.Is(err, errors.ErrUnsupported) {
		t.Errorf("Netem(duplicate): %v", err)
	}
	if err := a.Netem("delay"); err == nil {
		t.Error("Netem(delay): no error")
	}
}

func TestImpairNotImpairable(t *testing.T) {
	t.Parallel()
	l := New(t, Options{Hosts: 1})
	h := l.Hosts[0]
	if l.Impairable() {
		t.Error("Impairable() on a veth lab")
	}
	for _, err := range []error{h.Impair(Impairment{Loss: 1}), h.ImpairEgress(Impairment{}), h.ImpairIngress(Impairment{}), h.ClearImpair()} {
		if !errors.Is(err, ErrNotImpairable) || !errors.Is(err, errors.ErrUnsupported) {
			t.Errorf("Impair on a veth lab: %v", err)
		}
	}
	if st := h.ImpairStats(); st != (ImpairStats{}) {
		t.Errorf("ImpairStats on a veth lab: %+v", st)
	}
}

func TestImpairClose(t *testing.T) {
	t.Parallel()
	Require(t)
	l, err := NewLab(Options{Hosts: 2, Impair: true, Name: "close"})
	if err != nil {
		t.Fatal(err)
	}
	nss := l.namespaces()
	// Frames queued in the forwarder do not hold Close up.
	if err := l.Hosts[0].Impair(Impairment{Delay: 10 * time.Second}); err != nil {
		t.Fatal(err)
	}
	if err := ping(t, l.Hosts[0], l.Hosts[1].IP, 300*time.Millisecond); err == nil {
		t.Error("ping through a 10 s delay answered")
	}
	if q := l.Hosts[0].ImpairStats().Egress.Queued; q == 0 {
		t.Error("nothing queued")
	}
	start := time.Now()
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	for _, h := range l.Hosts {
		select {
		case <-h.fwd.done:
		default:
			t.Errorf("%s: forwarder still running after Close", h)
		}
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("Close took %v", d)
	}
	left, _ := listNamespaces()
	for _, ns := range nss {
		for _, x := range left {
			if x == ns {
				t.Errorf("namespace %s left after Close", ns)
			}
		}
	}
	if err := l.Hosts[0].Impair(Impairment{}); !errors.Is(err, ErrClosed) {
		t.Errorf("Impair after Close: %v", err)
	}
	if err := l.Hosts[0].Cut(); !errors.Is(err, ErrClosed) {
		t.Errorf("Cut after Close: %v", err)
	}
	if err := l.Hosts[0].Netem("loss 1%"); !errors.Is(err, ErrClosed) {
		t.Errorf("Netem after Close: %v", err)
	}
	if err := l.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

// seqpacketPair returns two connected SOCK_SEQPACKET sockets as pollable
// files: they keep frame boundaries, like a TAP.
func seqpacketPair(t testing.TB) (*os.File, *os.File) {
	t.Helper()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	return os.NewFile(uintptr(fds[0]), "a"), os.NewFile(uintptr(fds[1]), "b")
}

// fwdRig is a forwarder between two socket pairs: the test writes into
// host (as the host's kernel would) and reads from sw, and back.
type fwdRig struct {
	f        *forwarder
	host, sw *os.File // the test's ends
}

func newFwdRig(t testing.TB) *fwdRig {
	t.Helper()
	hostOuter, hostInner := seqpacketPair(t)
	swOuter, swInner := seqpacketPair(t)
	r := &fwdRig{f: newForwarder(hostInner, swInner), host: hostOuter, sw: swOuter}
	t.Cleanup(func() {
		_ = r.f.close()
		_ = hostOuter.Close()
		_ = swOuter.Close()
	})
	return r
}

type arrival struct {
	id int
	at time.Time
}

// collect reads frames "<id>" from f until n arrived or nothing came for
// quiet.
func collect(t testing.TB, f *os.File, n int, quiet time.Duration) []arrival {
	t.Helper()
	var got []arrival
	buf := make([]byte, 100)
	for len(got) < n {
		_ = f.SetReadDeadline(time.Now().Add(quiet))
		m, err := f.Read(buf)
		if err != nil {
			break
		}
		id, err := strconv.Atoi(string(buf[:m]))
		if err != nil {
			t.Fatalf("frame %q", buf[:m])
		}
		got = append(got, arrival{id, time.Now()})
	}
	return got
}

// transfer writes frames "0".."n-1" into from while it collects them from
// to (a socket pair holds only a few frames), until n arrived or nothing came
// for quiet; it returns when the first frame was written and what arrived.
func transfer(t testing.TB, from, to *os.File, n int, quiet time.Duration) (time.Time, []arrival) {
	t.Helper()
	start := time.Now()
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := range n {
			_ = from.SetWriteDeadline(time.Now().Add(5 * time.Second))
			if _, err := from.Write([]byte(strconv.Itoa(i))); err != nil {
				t.Errorf("write frame %d: %v", i, err)
				return
			}
		}
	}()
	got := collect(t, to, n, quiet)
	<-done
	return start, got
}

// sendFrames writes n frames that the forwarder drops or queues.
func sendFrames(t testing.TB, f *os.File, n int) {
	t.Helper()
	for i := range n {
		_ = f.SetWriteDeadline(time.Now().Add(5 * time.Second))
		if _, err := f.Write([]byte(strconv.Itoa(i))); err != nil {
			t.Fatal(err)
		}
	}
}

// TestForwarder checks the scheduler without TAPs (no root needed).
func TestForwarder(t *testing.T) {
	t.Parallel()
	t.Run("plain", func(t *testing.T) {
		t.Parallel()
		r := newFwdRig(t)
		_, got := transfer(t, r.host, r.sw, 100, 2*time.Second)
		for i, a := range got {
			if a.id != i {
				t.Fatalf("frame %d is %d: order changed without jitter", i, a.id)
			}
		}
		if len(got) != 100 {
			t.Fatalf("%d of 100 frames", len(got))
		}
		// The other direction.
		if _, got := transfer(t, r.sw, r.host, 10, 2*time.Second); len(got) != 10 {
			t.Fatalf("ingress: %d of 10 frames", len(got))
		}
		// The forwarder counts a frame after its write returns, which can
		// be after the frame arrived: wait for the count (bounded).
		st := r.f.dirs[egressDir].stats()
		for deadline := time.Now().Add(2 * time.Second); st.Forwarded < 100 && time.Now().Before(deadline); {
			time.Sleep(time.Millisecond)
			st = r.f.dirs[egressDir].stats()
		}
		if st.Forwarded != 100 || st.DroppedLoss+st.DroppedQueue+st.DroppedCut+st.WriteErrors != 0 {
			t.Errorf("egress stats %+v", st)
		}
	})
	t.Run("delay", func(t *testing.T) {
		t.Parallel()
		r := newFwdRig(t)
		r.f.dirs[egressDir].set(Impairment{Delay: 100 * time.Millisecond})
		start, got := transfer(t, r.host, r.sw, 50, 2*time.Second)
		if len(got) != 50 {
			t.Fatalf("%d of 50 frames", len(got))
		}
		for i, a := range got {
			if a.id != i {
				t.Fatalf("frame %d is %d: order changed by a fixed delay", i, a.id)
			}
			if d := a.at.Sub(start); d < 100*time.Millisecond || d > 2*time.Second {
				t.Fatalf("frame %d after %v, want 100ms", i, d)
			}
		}
		// The ingress is not delayed.
		if start, got := transfer(t, r.sw, r.host, 1, 2*time.Second); len(got) != 1 || got[0].at.Sub(start) > 80*time.Millisecond {
			t.Errorf("ingress: %v", got)
		}
	})
	t.Run("jitter", func(t *testing.T) {
		t.Parallel()
		r := newFwdRig(t)
		r.f.dirs[egressDir].set(Impairment{Delay: 50 * time.Millisecond, Jitter: 50 * time.Millisecond})
		start, got := transfer(t, r.host, r.sw, 300, 2*time.Second)
		if len(got) != 300 {
			t.Fatalf("%d of 300 frames", len(got))
		}
		reordered := 0
		var hi time.Duration
		for i, a := range got {
			if i > 0 && a.id < got[i-1].id {
				reordered++
			}
			hi = max(hi, a.at.Sub(start))
		}
		if reordered == 0 || hi < 60*time.Millisecond || hi > 2*time.Second {
			t.Errorf("jitter: %d reordered, last after %v", reordered, hi)
		}
	})
	t.Run("loss", func(t *testing.T) {
		t.Parallel()
		r := newFwdRig(t)
		r.f.dirs[egressDir].set(Impairment{Loss: 1})
		sendFrames(t, r.host, 50)
		r.f.dirs[ingressDir].set(Impairment{Loss: 0.5})
		_, got := transfer(t, r.sw, r.host, 1000, 300*time.Millisecond)
		if n := len(collect(t, r.sw, 1, 10*time.Millisecond)); n != 0 {
			t.Errorf("loss 1: %d frames arrived", n)
		}
		if len(got) < 350 || len(got) > 650 {
			t.Errorf("loss 0.5: %d of 1000 arrived", len(got))
		}
		eg, in := r.f.dirs[egressDir].stats(), r.f.dirs[ingressDir].stats()
		if eg.DroppedLoss != 50 || in.DroppedLoss+in.Forwarded != 1000 {
			t.Errorf("stats: egress %+v ingress %+v", eg, in)
		}
	})
	t.Run("limit", func(t *testing.T) {
		t.Parallel()
		r := newFwdRig(t)
		r.f.dirs[egressDir].set(Impairment{Delay: 200 * time.Millisecond, Limit: 10})
		_, got := transfer(t, r.host, r.sw, 50, time.Second)
		if st := r.f.dirs[egressDir].stats(); len(got) != 10 || st.DroppedQueue != 40 || st.Queued != 0 {
			t.Errorf("limit 10: %d arrived, stats %+v", len(got), st)
		}
	})
	t.Run("cut", func(t *testing.T) {
		t.Parallel()
		r := newFwdRig(t)
		r.f.dirs[egressDir].set(Impairment{Delay: 100 * time.Millisecond})
		sendFrames(t, r.host, 5)
		for i := 0; r.f.dirs[egressDir].stats().Queued < 5; i++ {
			if i == 1000 {
				t.Fatal("frames never queued")
			}
			time.Sleep(time.Millisecond)
		}
		r.f.setCut(true)
		sendFrames(t, r.sw, 5)
		r.f.setCut(false) // queued frames stay lost
		if got := collect(t, r.sw, 5, 300*time.Millisecond); len(got) != 0 {
			t.Errorf("%d frames queued before a cut arrived", len(got))
		}
		if st := r.f.dirs[egressDir].stats(); st.DroppedCut != 5 {
			t.Errorf("stats %+v", st)
		}
		if _, got := transfer(t, r.host, r.sw, 5, 2*time.Second); len(got) != 5 {
			t.Errorf("after the cut: %d of 5 frames", len(got))
		}
	})
	t.Run("close", func(t *testing.T) {
		t.Parallel()
		r := newFwdRig(t)
		r.f.dirs[egressDir].set(Impairment{Delay: time.Minute})
		sendFrames(t, r.host, 20)
		start := time.Now()
		if err := r.f.close(); err != nil {
			t.Fatal(err)
		}
		if d := time.Since(start); d > time.Second {
			t.Errorf("close took %v", d)
		}
		if err := r.f.close(); err != nil {
			t.Errorf("second close: %v", err)
		}
	})
}

func TestParseNetem(t *testing.T) {
	ms := time.Millisecond
	for _, tc := range []struct {
		spec string
		want Impairment
	}{
		{"", Impairment{}},
		{"loss 20%", Impairment{Loss: 0.2}},
		{"loss random 20", Impairment{Loss: 0.2}},
		{"drop 100%", Impairment{Loss: 1}},
		{"loss 0.5%", Impairment{Loss: 0.005}},
		{"delay 10ms", Impairment{Delay: 10 * ms}},
		{"delay 10ms 50ms", Impairment{Delay: 10 * ms, Jitter: 50 * ms}},
		{"loss 20% delay 10ms 50ms", Impairment{Loss: 0.2, Delay: 10 * ms, Jitter: 50 * ms}},
		{"delay 10ms 5ms loss 1%", Impairment{Loss: 0.01, Delay: 10 * ms, Jitter: 5 * ms}},
		{"delay 1.5msec 100usec", Impairment{Delay: 1500 * time.Microsecond, Jitter: 100 * time.Microsecond}},
		{"delay 1s", Impairment{Delay: time.Second}},
		{"delay 2secs", Impairment{Delay: 2 * time.Second}},
		{"delay 100", Impairment{Delay: 100 * time.Microsecond}},
		{"delay 500ns", Impairment{Delay: 500}},
		{"delay 1m", Impairment{Delay: time.Minute}},
		{"delay 0ms 50ms", Impairment{Jitter: 50 * ms}},
		{"limit 1000 delay 10ms", Impairment{Delay: 10 * ms, Limit: 1000}},
	} {
		got, err := ParseNetem(tc.spec)
		if err != nil || got != tc.want {
			t.Errorf("ParseNetem(%q) = %+v, %v; want %+v", tc.spec, got, err, tc.want)
		}
	}
	for _, spec := range []string{
		"loss", "loss 101%", "loss -1%", "loss x", "delay", "delay x", "delay -5ms", "delay 2m",
		"limit", "limit 0", "limit x",
	} {
		if _, err := ParseNetem(spec); err == nil || errors.Is(err, errors.ErrUnsupported) {
			t.Errorf("ParseNetem(%q): %v, want a syntax error", spec, err)
		}
	}
	for _, spec := range []string{
		"loss 20% 25%", "delay 10ms 5ms 25%", "delay 10ms 5ms distribution normal", "duplicate 1%",
		"corrupt 1%", "reorder 25%", "rate 1mbit", "loss state 1", "loss gemodel 1%", "slot 1ms", "loss ecn 1%",
	} {
		if _, err := ParseNetem(spec); !errors.Is(err, errors.ErrUnsupported) {
			t.Errorf("ParseNetem(%q): %v, want ErrUnsupported", spec, err)
		}
	}
}

func FuzzParseNetem(f *testing.F) {
	for _, s := range []string{"", "loss 20%", "loss random 20 delay 10ms 50ms", "delay 1.5msec", "limit 5", "delay 1e300s", "loss NaN"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, spec string) {
		im, err := ParseNetem(spec)
		if err != nil {
			return
		}
		if verr := im.validate(); verr != nil {
			t.Fatalf("ParseNetem(%q) = %+v, invalid: %v", spec, im, verr)
		}
		// What String prints parses back to the same impairment.
		if s := im.String(); s != "none" {
			back, err := ParseNetem(s)
			lossOK := math.Abs(back.Loss-im.Loss) <= 1e-12
			back.Loss = im.Loss
			if err != nil || back != im || !lossOK {
				t.Fatalf("ParseNetem(%q) = %+v; String %q parses to %+v, %v", spec, im, s, back, err)
			}
		}
	})
}

// BenchmarkForward measures what one host can send to another through the
// lab: 100-byte frames (UDP), flooded for 2 s by a helper process, counted
// by another. It reports frames/s sent and received, the loss, and the CPU
// this process used meanwhile (the forwarder's cost in an Impair lab:
// cores = CPU seconds per second).
//
//	go test -run XXX -bench Forward -benchtime 1x ./internal/netlab/
func BenchmarkForward(b *testing.B) {
	for _, c := range []struct {
		name   string
		impair bool
		pps    int
		im     *Impairment
	}{
		{"veth/max", false, 0, nil},
		{"impair/max", true, 0, nil},
		{"veth/100k", false, 100000, nil},
		{"impair/100k", true, 100000, nil},
		{"impair/100k/loss20%-jitter50ms", true, 100000, &Impairment{Loss: 0.2, Jitter: 50 * time.Millisecond}},
		{"impair/100k/delay50ms", true, 100000, &Impairment{Delay: 50 * time.Millisecond}},
		{"impair/100k/delay50ms-limit50k", true, 100000, &Impairment{Delay: 50 * time.Millisecond, Limit: 50000}},
	} {
		b.Run(c.name, func(b *testing.B) {
			Require(b)
			l, err := NewLab(Options{Hosts: 2, Impair: c.impair})
			if err != nil {
				b.Fatal(err)
			}
			defer l.Close()
			a, dst := l.Hosts[0], l.Hosts[1]
			mustPing(b, a, dst.IP) // neighbours resolved before any loss
			if c.im != nil {
				for _, h := range l.Hosts {
					if err := h.Impair(*c.im); err != nil {
						b.Fatal(err)
					}
				}
			}
			const secs = 2
			for b.Loop() {
				sink := helperStart(b, dst, "udp-sink", "45000", fmt.Sprint(secs+3)+"s")
				waitEvent(b, sink, "ready")
				var ru0, ru1 unix.Rusage
				_ = unix.Getrusage(unix.RUSAGE_SELF, &ru0)
				t0 := time.Now()
				flood := helperStart(b, a, "udp-flood", dst.IP.String(), "45000", fmt.Sprint(c.pps), fmt.Sprint(secs)+"s")
				sent := waitEvent(b, flood, "sent")
				wall := time.Since(t0)
				got := waitEvent(b, sink, "got")
				_ = unix.Getrusage(unix.RUSAGE_SELF, &ru1)
				cpu := time.Duration(ru1.Utime.Nano()+ru1.Stime.Nano()-ru0.Utime.Nano()-ru0.Stime.Nano()) * time.Nanosecond
				ns, _ := sent.Uint("n")
				ng, _ := got.Uint("n")
				el, _ := strconv.ParseFloat(sent.Str("secs"), 64)
				b.ReportMetric(float64(ns)/el, "sent/s")
				b.ReportMetric(float64(ng)/el, "recv/s")
				b.ReportMetric(100*(1-float64(ng)/float64(max(ns, 1))), "loss%")
				// The forwarder ran while the flood ran and while the delay
				// queue drained.
				b.ReportMetric(cpu.Seconds()/wall.Seconds(), "cores")
				if c.impair {
					b.Logf("stats host0 %+v host1 %+v", a.ImpairStats(), dst.ImpairStats())
				}
				if os.Getenv("NETLAB_BENCH_DEBUG") != "" {
					c0, _ := a.Counters()
					c1, _ := dst.Counters()
					sw, _ := exec.Command("ip", "-n", l.SwitchNS(), "-s", "-br", "link").CombinedOutput()
					swd, _ := exec.Command("ip", "-n", l.SwitchNS(), "-s", "link", "show", "dev", dst.port).CombinedOutput()
					b.Logf("eth0 host0 %+v host1 %+v\n%s\n%s", c0, c1, sw, swd)
				}
			}
		})
	}
}
