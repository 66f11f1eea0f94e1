package gossip

import (
	"bytes"
	"net"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/net/bpf"
	"golang.org/x/net/ipv4"
)

// TestQuietFilterKernel attaches quietFilter to a real UDP socket on
// 127.0.0.1 and sends it, from another socket, the quiet heartbeats many
// times and lookalikes (same length, one byte apart; a byte longer or
// shorter) a few times each: every lookalike arrives, a quiet heartbeat
// about one time in quietSample, never all of them.
func TestQuietFilterKernel(t *testing.T) {
	for _, signed := range []bool{false, true} {
		name := map[bool]string{false: "unsigned", true: "signed"}[signed]
		t.Run(name, func(t *testing.T) {
			var k *Keyring
			if signed {
				k = NewKeyring("s3cret")
			}
			hb := func(node string) []byte { return AppendHeartbeat(nil, node, k) }
			quiet := [][]byte{
				hb("a1@127.0.0.1:9100"),
				hb("b1@127.0.0.1:9100"),
				hb("node-with-a-much-longer-name-than-the-others@127.0.0.1:9100"),
			}
			loud := [][]byte{
				hb("c1@127.0.0.1:9100"),   // same length as a1/b1
				hb("a1@127.0.0.1:9101"),   // last byte differs
				hb("a1@127.0.0.1:910"),    // a byte shorter
				hb("a1@127.0.0.1:91000"),  // a byte longer
				[]byte("MACULA_GOSSIP:a"), // short
			}
			if signed {
				// Same node field, another secret: another HMAC tail.
				loud = append(loud, AppendHeartbeat(nil, "a1@127.0.0.1:9100", NewKeyring("other")))
			}
			prog, n := quietFilter(quiet, signed, maxFilterInsns)
			if n != len(quiet) {
				t.Fatalf("filter holds %d of %d heartbeats", n, len(quiet))
			}
			const sends, loudSends = 1280, 20
			got := exchange(t, prog, func(send func([]byte)) {
				for i := range sends {
					for _, q := range quiet {
						send(q)
					}
					if i < loudSends {
						for _, l := range loud {
							send(l)
						}
					}
				}
			}, len(loud)*loudSends)
			for _, l := range loud {
				if c := got[string(l)]; c != loudSends {
					t.Errorf("lookalike %q: %d of %d arrived, want all", l, c, loudSends)
				}
			}
			for _, q := range quiet {
				// Binomial(1280, 1/64): mean 20; P(0) is 2e-9, P(>=60) far less.
				if c := got[string(q)]; c == 0 || c >= 60 {
					t.Errorf("quiet %q: %d of %d arrived, want about %d", q, c, sends, sends/quietSample)
				}
			}
		})
	}
}

// TestQuietFilterFull: a program that cannot hold every heartbeat holds as
// many as fit under the kernel's limit, drops those, and keeps the rest.
func TestQuietFilterFull(t *testing.T) {
	var quiet [][]byte
	for i := range 400 {
		quiet = append(quiet, AppendHeartbeat(nil, "node-"+string(rune('a'+i%26))+string(rune('a'+i/26))+"@127.0.0.1:9100", nil))
	}
	prog, n := quietFilter(quiet, false, maxFilterInsns)
	if len(prog) > maxFilterInsns || n == 0 || n >= len(quiet) {
		t.Fatalf("%d instructions for %d of %d heartbeats", len(prog), n, len(quiet))
	}
	if _, err := bpf.Assemble(prog); err != nil {
		t.Fatal(err)
	}
	// The last heartbeat (sorted by length, all equal here: the last one)
	// is out; the first is in.
	const sends = 160
	got := exchange(t, prog, func(send func([]byte)) {
		for range sends {
			send(quiet[0])
			send(quiet[len(quiet)-1])
		}
	}, sends)
	if c := got[string(quiet[len(quiet)-1])]; c != sends {
		t.Errorf("heartbeat beyond the filter: %d of %d arrived", c, sends)
	}
	if c := got[string(quiet[0])]; c >= sends/2 {
		t.Errorf("heartbeat in the filter: %d of %d arrived", c, sends)
	}
}

// exchange attaches prog to a UDP socket on 127.0.0.1, runs send with a
// function that sends one datagram to it, and counts what arrives, by
// content. It stops once it has at least want datagrams and the socket
// has been quiet for 200 ms after the last send.
func exchange(t *testing.T, prog []bpf.Instruction, run func(send func([]byte)), want int) map[string]int {
	t.Helper()
	raw, err := bpf.Assemble(prog)
	if err != nil {
		t.Fatal(err)
	}
	rc, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	if err := rc.SetReadBuffer(4 << 20); err != nil {
		t.Fatal(err)
	}
	if err := ipv4.NewPacketConn(rc).SetBPF(raw); err != nil {
		t.Fatalf("attach the filter: %v", err)
	}
	sc, err := net.DialUDP("udp4", nil, rc.LocalAddr().(*net.UDPAddr))
	if err != nil {
		t.Fatal(err)
	}
	defer sc.Close()
	got := map[string]int{}
	var mu sync.Mutex
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 2048)
		for {
			n, err := rc.Read(buf)
			if err != nil {
				return
			}
			mu.Lock()
			got[string(bytes.Clone(buf[:n]))]++
			mu.Unlock()
		}
	}()
	run(func(b []byte) {
		if _, err := sc.Write(b); err != nil && err != syscall.ECONNREFUSED {
			t.Fatal(err)
		}
	})
	total := func() int {
		mu.Lock()
		defer mu.Unlock()
		n := 0
		for _, c := range got {
			n += c
		}
		return n
	}
	// Loopback delivers synchronously: by now every datagram is queued or
	// filtered. Drain until the count stops moving.
	last, stable := -1, time.Now()
	for end := time.Now().Add(10 * time.Second); time.Now().Before(end); time.Sleep(20 * time.Millisecond) {
		if n := total(); n != last {
			last, stable = n, time.Now()
		} else if n >= want && time.Since(stable) > 200*time.Millisecond {
			break
		}
	}
	rc.Close()
	<-done
	mu.Lock()
	defer mu.Unlock()
	return got
}

// TestLinkedQuiet: a peer reported linked is heard about one heartbeat in
// quietSample and does not expire however long that takes; unlinked, it is
// heard in full again and expires Expiry after it falls silent.
func TestLinkedQuiet(t *testing.T) {
	t.Parallel()
	port := freePort(t)
	a := startNode(t, port, "a", nil)
	b := startNode(t, port, "b", nil)
	a.rec.wait(t, "a discovers b", func(evs []Event) bool { return has(evs, Discovered, b.name) })
	a.Linked("b@127.0.0.1", true)
	eventually(t, "the filter holds b and a", func() bool { st := a.Stats(); return st.Quiet == 2 && st.Linked == 1 })

	// 64 heartbeats of b, 3.2 s: eight times the expiry (400 ms).
	const beats = 64
	h0, o0, s0 := a.Stats().HeartbeatsReceived, a.Stats().OwnIgnored, b.Stats().HeartbeatsSent
	eventually(t, "b sends 64 heartbeats", func() bool { return b.Stats().HeartbeatsSent >= s0+beats })
	if got := a.Stats().HeartbeatsReceived - h0; got >= beats/2 {
		t.Errorf("a read %d of b's %d heartbeats while linked, want about %d", got, beats, beats/quietSample)
	}
	// a sends as often as b: its own heartbeats come back, quiet too.
	if got := a.Stats().OwnIgnored - o0; got >= beats/2 {
		t.Errorf("a read %d of its own heartbeats in the time b sent %d, want about %d", got, beats, beats/quietSample)
	}
	if evs, _ := a.rec.snapshot(); has(evs, Lost, b.name) {
		t.Fatalf("linked b expired: %v", evs)
	}

	a.Linked("b@127.0.0.1", false)
	eventually(t, "the filter lets b through", func() bool { st := a.Stats(); return st.Quiet == 0 && st.Linked == 0 })
	h1 := a.Stats().HeartbeatsReceived
	eventually(t, "a reads b's heartbeats again", func() bool { return a.Stats().HeartbeatsReceived >= h1+20 })
	b.Close()
	a.rec.wait(t, "unlinked b expires", func(evs []Event) bool { return has(evs, Lost, b.name) })
}
