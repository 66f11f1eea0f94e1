package erldist

import (
	"context"
	"testing"
	"time"
)

// BenchmarkRoundTripErlang: Go mailbox -> Erlang agent (REG_SEND) -> back to the Go pid
// (SEND_SENDER), one message in flight, on loopback.
func BenchmarkRoundTripErlang(b *testing.B) {
	needErlang(b)
	port := startEPMD(b)
	g := startGo(b, "go@127.0.0.1", port, func(c *Config) { c.Logger = nil })
	startErl(b, "bench@127.0.0.1", port, erlOpts{})
	ctx := context.Background()
	start := time.Now()
	if err := g.Connect(ctx, "bench@127.0.0.1"); err != nil {
		b.Fatal(err)
	}
	b.Logf("connect: %v", time.Since(start))
	box, _ := g.Register("bench")
	agent := Name{Node: "bench@127.0.0.1", Name: "agent"}
	payload := []byte("0123456789abcdef0123456789abcdef")
	msg := Tuple{Atom("echo"), box.Pid(), Tuple{Atom("data"), payload}}
	b.ResetTimer()
	for range b.N {
		if err := box.Send(ctx, agent, msg); err != nil {
			b.Fatal(err)
		}
		select {
		case <-box.C():
		case <-time.After(5 * time.Second):
			b.Fatal("no echo")
		}
	}
}

// BenchmarkRoundTripGo: the same between two Go nodes, for comparison with mesh Send.
func BenchmarkRoundTripGo(b *testing.B) {
	port := freePort(b)
	x := startGo(b, "x@127.0.0.1", port, func(c *Config) { c.Logger = nil; c.EmbeddedEPMD = true })
	y := startGo(b, "y@127.0.0.1", port, func(c *Config) { c.Logger = nil })
	ctx := context.Background()
	if err := x.Connect(ctx, "y@127.0.0.1"); err != nil {
		b.Fatal(err)
	}
	echo, _ := y.Register("echo")
	done := make(chan struct{})
	go func() {
		defer close(done)
		for m := range echo.C() {
			echo.Send(ctx, m.From, m.Term)
		}
	}()
	box, _ := x.Register("box")
	to := Name{Node: "y@127.0.0.1", Name: "echo"}
	payload := Tuple{Atom("data"), []byte("0123456789abcdef0123456789abcdef")}
	b.ResetTimer()
	for range b.N {
		if err := box.Send(ctx, to, payload); err != nil {
			b.Fatal(err)
		}
		<-box.C()
	}
	b.StopTimer()
	y.Close()
	<-done
}

func BenchmarkDecode(b *testing.B) {
	enc, _ := Encode(Tuple{Atom("$gen_call"), Tuple{Pid{Node: "n@h", ID: 1}, Ref{Node: "n@h", IDs: []uint32{1, 2, 3}}},
		Tuple{Atom("req"), []byte("0123456789abcdef"), List{int64(1), int64(2), Atom("x")}, Map{{Key: Atom("k"), Value: 1.5}}}})
	b.SetBytes(int64(len(enc)))
	for range b.N {
		if _, err := Decode(enc); err != nil {
			b.Fatal(err)
		}
	}
}
