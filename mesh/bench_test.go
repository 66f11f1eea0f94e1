package mesh

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/binary"
	"io"
	"net"
	"strconv"
	"sync/atomic"
	"testing"
	"time"
)

var benchSizes = []int{64, 64 << 10}

func sizeName(n int) string {
	if n >= 1<<10 {
		return strconv.Itoa(n>>10) + "KiB"
	}
	return strconv.Itoa(n) + "B"
}

// BenchmarkHandshake: TCP connect plus the full mesh handshake on loopback,
// as a dialer (the acceptor is a real Mesh).
func BenchmarkHandshake(b *testing.B) {
	a, _ := startNode(b, "a@127.0.0.1", func(c *Config) { c.OnEvent = nil; c.OnMessage = nil })
	self := hello{Incarnation: 1, Start: 1, MaxMessage: 1 << 20, Name: "bench@127.0.0.1", Addr: "127.0.0.1:1", Features: sealFeatures}
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		c, err := net.Dial("tcp", a.Addr())
		if err != nil {
			b.Fatal(err)
		}
		c.SetDeadline(time.Now().Add(10 * time.Second))
		self.Incarnation = uint64(i + 1) // each one replaces the last: no duplicate refusals
		self.Start = int64(i + 1)
		rand.Read(self.Nonce[:])
		if _, err := clientHandshake(c, []byte(testCookie), self, a.Name()); err != nil {
			b.Fatal(err)
		}
		c.Close()
	}
}

// BenchmarkSend: messages from one Mesh to another, until all arrived, over
// sealed links with each record cipher ("aes" is what two nodes with AES
// hardware pick, "chacha" the fallback).
func BenchmarkSend(b *testing.B) {
	for _, c := range []struct {
		name string
		feat uint64
	}{{"aes", featSealAESGCM}, {"chacha", featSealChaCha}} {
		b.Run(c.name, func(b *testing.B) {
			if c.feat == featSealAESGCM && !hasAESHardware() {
				b.Skip("no AES hardware")
			}
			defer func(f uint64) { sealFeatures = f }(sealFeatures)
			sealFeatures = c.feat
			benchSend(b, nil)
		})
	}
}

// BenchmarkSendTLS: the same over TLS 1.3 (records of crypto/tls, no
// sealing of ours).
func BenchmarkSendTLS(b *testing.B) {
	p := newPKI(b)
	benchSend(b, func(c *Config, n string) { c.TLS = p.mtls(p.leaf(b, n)) })
}

func benchSend(b *testing.B, mod func(*Config, string)) {
	for _, size := range benchSizes {
		b.Run(sizeName(size), func(b *testing.B) {
			var got atomic.Int64
			done := make(chan struct{}, 1)
			var want atomic.Int64
			want.Store(-1)
			x, _ := startNode(b, "x@127.0.0.1", func(c *Config) {
				c.OnEvent = nil
				c.OnMessage = nil
				if mod != nil {
					mod(c, "x")
				}
			})
			y, _ := startNode(b, "y@127.0.0.1", func(c *Config) {
				c.OnEvent = nil
				c.OnMessage = func(string, []byte) {
					if got.Add(1) == want.Load() {
						done <- struct{}{}
					}
				}
				if mod != nil {
					mod(c, "y")
				}
			})
			x.Connect(y.Name(), y.Addr())
			eventually(b, 10*time.Second, "link", func() bool { return linkedTo(x, y.Name()) && linkedTo(y, x.Name()) })
			payload := make([]byte, size)
			ctx := context.Background()
			b.SetBytes(int64(size))
			b.ResetTimer()
			want.Store(int64(b.N))
			for range b.N {
				if err := x.Send(ctx, y.Name(), payload); err != nil {
					b.Fatal(err)
				}
			}
			if got.Load() < int64(b.N) {
				<-done
			}
			b.StopTimer()
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
		})
	}
}

// BenchmarkRawTCP: the same framing (4-byte length + type + payload) over a
// plain loopback TCP connection with 64 KiB buffers, as the floor for
// BenchmarkSend.
func BenchmarkRawTCP(b *testing.B) {
	for _, size := range benchSizes {
		b.Run(sizeName(size), func(b *testing.B) {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				b.Fatal(err)
			}
			defer ln.Close()
			n := b.N
			recvd := make(chan error, 1)
			go func() {
				c, err := ln.Accept()
				if err != nil {
					recvd <- err
					return
				}
				defer c.Close()
				br := bufio.NewReaderSize(c, readBufSize)
				var hdr [frameHeaderLen]byte
				buf := make([]byte, size)
				for range n {
					if _, err := io.ReadFull(br, hdr[:]); err != nil {
						recvd <- err
						return
					}
					if _, err := io.ReadFull(br, buf[:binary.BigEndian.Uint32(hdr[:4])-1]); err != nil {
						recvd <- err
						return
					}
				}
				recvd <- nil
			}()
			c, err := net.Dial("tcp", ln.Addr().String())
			if err != nil {
				b.Fatal(err)
			}
			defer c.Close()
			bw := bufio.NewWriterSize(c, writeBufSize)
			payload := make([]byte, size)
			var hdr [frameHeaderLen]byte
			binary.BigEndian.PutUint32(hdr[:4], uint32(1+size))
			hdr[4] = byte(frameMessage)
			b.SetBytes(int64(size))
			b.ResetTimer()
			for range n {
				bw.Write(hdr[:])
				bw.Write(payload)
			}
			bw.Flush()
			if err := <-recvd; err != nil {
				b.Fatal(err)
			}
			b.StopTimer()
			b.ReportMetric(float64(n)/b.Elapsed().Seconds(), "msgs/s")
		})
	}
}

// BenchmarkRoundTrip: one 64-byte message to a peer that echoes it, and
// back, over a sealed link on loopback: the figure to set beside erldist's
// BenchmarkRoundTripErlang (Go -> Erlang -> Go).
func BenchmarkRoundTrip(b *testing.B) {
	back := make(chan struct{}, 1)
	var echo *Mesh
	a, _ := startNode(b, "a@127.0.0.1", func(c *Config) {
		c.OnEvent = nil
		c.OnMessage = func(string, []byte) { back <- struct{}{} }
	})
	echo, _ = startNode(b, "e@127.0.0.1", func(c *Config) {
		c.OnEvent = nil
		c.OnMessage = func(from string, p []byte) { echo.Send(context.Background(), from, p) }
	})
	a.Connect(echo.Name(), echo.Addr())
	eventually(b, 10*time.Second, "linked", func() bool { return linkedTo(a, echo.Name()) && linkedTo(echo, a.Name()) })
	msg := make([]byte, 64)
	ctx := context.Background()
	b.ResetTimer()
	for range b.N {
		if err := a.Send(ctx, echo.Name(), msg); err != nil {
			b.Fatal(err)
		}
		<-back
	}
}
