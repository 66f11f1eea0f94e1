package mesh

// The netns tests (netns_test.go) re-execute this test binary inside a
// namespace with MESH_NETNS_HELPER=1 and a mode as first argument: "node"
// runs a Mesh, "relay" runs the relay of relay_test.go. Both print one JSON
// object per line on stdout (netlab.Proc keeps and parses them), act on
// SIGUSR1, and on SIGTERM stop, print a last line and exit 0. Each exits
// with status 1 after -max, so a lost helper never outlives its test.

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"
)

const netnsHelperEnv = "MESH_NETNS_HELPER"

var attackNames = map[string]attack{"forward": forward, "flip": flipBit, "inject": inject, "replay": replay}

func runNetnsHelper(args []string) int {
	if len(args) == 0 {
		fmt.Fprintln(os.Stderr, "netns helper: no mode")
		return 2
	}
	var err error
	switch args[0] {
	case "node":
		err = helperNode(args[1:])
	case "relay":
		err = helperRelay(args[1:])
	default:
		err = fmt.Errorf("unknown mode %q", args[0])
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "netns helper:", err)
		return 1
	}
	return 0
}

// emitter writes JSON lines; safe for concurrent use.
type emitter struct{ mu sync.Mutex }

func (e *emitter) emit(event string, kv ...any) {
	m := map[string]any{"event": event}
	for i := 0; i+1 < len(kv); i += 2 {
		m[kv[i].(string)] = kv[i+1]
	}
	b, _ := json.Marshal(m)
	e.mu.Lock()
	os.Stdout.Write(append(b, '\n'))
	e.mu.Unlock()
}

// emitHandler turns every log record into a "log" line with its message,
// level, and reason and remote address (if any).
type emitHandler struct{ e *emitter }

func (h emitHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h emitHandler) Handle(_ context.Context, r slog.Record) error {
	var reason, remote string
	r.Attrs(func(a slog.Attr) bool {
		switch a.Key {
		case "reason":
			reason = a.Value.String()
		case "remote":
			remote = a.Value.String()
		}
		return true
	})
	h.e.emit("log", "msg", r.Message, "level", r.Level.String(), "reason", reason, "remote", remote)
	return nil
}
func (h emitHandler) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h emitHandler) WithGroup(string) slog.Handler      { return h }

// exitOnFatal is the fatalTB of a helper process.
type exitOnFatal struct{}

func (exitOnFatal) Helper() {}
func (exitOnFatal) Fatal(args ...any) {
	fmt.Fprintln(os.Stderr, append([]any{"netns helper:"}, args...)...)
	os.Exit(1)
}

// selfTLS is the TLS of a node run with --tls-cert/--tls-key and no CA:
// a certificate of its own, none verified.
func selfTLS(cn string) *tls.Config {
	p := newPKI(exitOnFatal{})
	return &tls.Config{Certificates: []tls.Certificate{p.leaf(exitOnFatal{}, cn)}, InsecureSkipVerify: true,
		MinVersion: tls.VersionTLS13}
}

// helperNode runs a Mesh:
//
//	node -name N -listen ADDR [-peer NAME -via ADDR] [-send P1,P2,...]
//	     [-cipher aes|chacha] [-tls] [-max D]
//
// It connects to -peer at -via, and sends the next of -send to -peer at
// each SIGUSR1 ("sent" line). Lines: ready, nodeup, nodedown, message, log,
// sent, and on SIGTERM stats (after Close).
func helperNode(args []string) error {
	fs := flag.NewFlagSet("node", flag.ContinueOnError)
	name := fs.String("name", "", "node name")
	listen := fs.String("listen", "", "listen address")
	peer := fs.String("peer", "", "node to connect to")
	via := fs.String("via", "", "address to dial -peer at")
	send := fs.String("send", "", "comma-separated payloads, one per SIGUSR1")
	cipher := fs.String("cipher", "", "pin the record cipher: aes or chacha")
	useTLS := fs.Bool("tls", false, "TLS with a certificate of its own and no CA")
	maxRun := fs.Duration("max", time.Minute, "exit 1 after this long")
	if err := fs.Parse(args); err != nil {
		return err
	}
	switch *cipher {
	case "aes":
		sealFeatures = featSealAESGCM
	case "chacha":
		sealFeatures = featSealChaCha
	case "":
	default:
		return fmt.Errorf("cipher %q", *cipher)
	}
	var e emitter
	cfg := Config{
		Name: *name, Cookie: testCookie, Listen: *listen,
		LinkTimeout: 5 * time.Minute, // no ticks during a test: every record is a message
		Logger:      slog.New(emitHandler{&e}),
		OnEvent: func(ev Event) {
			e.emit(strings.ToLower(ev.Kind.String()), "node", ev.Node, "reason", string(ev.Reason))
		},
		OnMessage: func(from string, p []byte) { e.emit("message", "from", from, "payload", string(p)) },
	}
	if *useTLS {
		cfg.TLS = selfTLS(*name)
	}
	m, err := Start(context.Background(), cfg)
	if err != nil {
		return err
	}
	sig := make(chan os.Signal, 4)
	signal.Notify(sig, syscall.SIGUSR1, syscall.SIGTERM, syscall.SIGINT)
	e.emit("ready", "addr", m.Addr())
	if *peer != "" {
		m.Connect(*peer, *via)
	}
	payloads := strings.Split(*send, ",")
	deadline := time.NewTimer(*maxRun)
	for {
		select {
		case s := <-sig:
			if s != syscall.SIGUSR1 {
				m.Close()
				st := m.Stats()
				e.emit("stats", "protocol_errors", nonZero(st.ProtocolErrors),
					"handshake_failures", nonZero(st.HandshakeFailures), "messages_received", st.MessagesReceived)
				return nil
			}
			if len(payloads) == 0 || payloads[0] == "" {
				return fmt.Errorf("SIGUSR1: nothing left to send")
			}
			p := payloads[0]
			payloads = payloads[1:]
			if err := m.Send(context.Background(), *peer, []byte(p)); err != nil {
				e.emit("send_failed", "payload", p, "err", err.Error())
				continue
			}
			e.emit("sent", "payload", p)
		case <-deadline.C:
			m.Close()
			return fmt.Errorf("still running after %v", *maxRun)
		}
	}
}

// helperRelay runs a relay:
//
//	relay -listen ADDR -target ADDR -mode fwd|mitm|tls [-attack A] [-forbid S1,S2] [-max D]
//
// fwd forwards bytes; mitm is the tampering relay, armed with -attack at
// each SIGUSR1 ("armed", then "fired" when carried out); tls terminates
// TLS on both sides with a certificate of its own. On SIGTERM it closes and
// prints "seen": the records relayed from the dialer and whether any of
// -forbid crossed it in clear (mitm).
func helperRelay(args []string) error {
	fs := flag.NewFlagSet("relay", flag.ContinueOnError)
	listen := fs.String("listen", "", "listen address")
	target := fs.String("target", "", "address to relay to")
	mode := fs.String("mode", "fwd", "fwd, mitm or tls")
	attackName := fs.String("attack", "forward", "mitm: flip, inject or replay")
	forbid := fs.String("forbid", "", "mitm: comma-separated strings that must not cross in clear")
	maxRun := fs.Duration("max", time.Minute, "exit 1 after this long")
	if err := fs.Parse(args); err != nil {
		return err
	}
	a, ok := attackNames[*attackName]
	if !ok {
		return fmt.Errorf("attack %q", *attackName)
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return err
	}
	var e emitter
	var r *relay
	var mr *mitm
	switch *mode {
	case "fwd":
		r = startRelay(ln, *target, nil, nil)
	case "mitm":
		mr = startMITM(ln, *target)
		r = mr.relay
	case "tls":
		r = startTLSRelay(ln, *target, selfTLS("relay").Certificates[0])
	default:
		ln.Close()
		return fmt.Errorf("mode %q", *mode)
	}
	defer r.Close()
	sig := make(chan os.Signal, 4)
	signal.Notify(sig, syscall.SIGUSR1, syscall.SIGTERM, syscall.SIGINT)
	e.emit("ready", "addr", r.Addr())
	deadline := time.NewTimer(*maxRun)
	var fired <-chan struct{}
	for {
		select {
		case s := <-sig:
			if s != syscall.SIGUSR1 {
				r.Close()
				if mr == nil {
					e.emit("seen")
					return nil
				}
				mr.mu.Lock()
				n := mr.records
				mr.mu.Unlock()
				e.emit("seen", "records", n, "leak", *forbid != "" && mr.leaked(strings.Split(*forbid, ",")...))
				return nil
			}
			if mr == nil {
				return fmt.Errorf("SIGUSR1: mode %s has no attack", *mode)
			}
			fired = mr.arm(a)
			e.emit("armed", "attack", *attackName)
		case <-fired:
			fired = nil
			e.emit("fired", "attack", *attackName)
		case <-deadline.C:
			return fmt.Errorf("still running after %v", *maxRun)
		}
	}
}
