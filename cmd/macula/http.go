package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	cluster "github.com/macula-io/cluster"
)

// nodesView is the JSON of /nodes and the input of `macula nodes`.
type nodesView struct {
	Self struct {
		Node        string            `json:"node"`
		Addr        string            `json:"addr"`
		Incarnation uint64            `json:"incarnation,string"`
		Strategy    string            `json:"strategy"`
		Tags        map[string]string `json:"tags,omitempty"`
	} `json:"self"`
	Discovered []nodeView `json:"discovered"`
	Connected  []nodeView `json:"connected"`
	// Recent are the members that went down lately (reason "left" for a
	// graceful leave), until they come back or 15 minutes pass.
	Recent []recentMember `json:"recent"`
}

type nodeView struct {
	Node        string            `json:"node"`
	Addr        string            `json:"addr"`
	Source      string            `json:"source,omitempty"`
	Incarnation uint64            `json:"incarnation,omitempty,string"`
	Outbound    *bool             `json:"outbound,omitempty"`
	Erlang      bool              `json:"erlang,omitempty"` // linked through Erlang distribution (--erlang)
	Since       time.Time         `json:"since"`
	Tags        map[string]string `json:"tags,omitempty"`
}

func viewOf(c *cluster.Cluster, recent *recentTable) nodesView {
	var v nodesView
	v.Self.Node, v.Self.Addr = c.Self().Node, c.Self().Addr
	v.Self.Incarnation, v.Self.Strategy, v.Self.Tags = c.Mesh().Incarnation(), c.Strategy().Name(), c.Self().Tags
	v.Discovered, v.Connected, v.Recent = []nodeView{}, []nodeView{}, recent.list(time.Now())
	for _, p := range c.Discovered() {
		v.Discovered = append(v.Discovered, nodeView{Node: p.Node, Addr: p.Addr, Source: p.Source, Since: p.Since})
	}
	for _, m := range c.Connected() {
		nv := nodeView{Node: m.Node, Addr: m.Addr, Incarnation: m.Incarnation, Erlang: m.Erlang, Since: m.Since, Tags: m.Tags}
		if !m.Erlang { // an Erlang link's direction is not known
			out := m.Outbound
			nv.Outbound = &out
		}
		v.Connected = append(v.Connected, nv)
	}
	return v
}

type httpServer struct {
	ln    net.Listener
	srv   *http.Server
	limit *connLimiter
	done  chan struct{}
}

func (s *httpServer) Addr() string { return s.ln.Addr().String() }

func (s *httpServer) Close() {
	s.srv.Close()
	<-s.done
}

// serveHTTP serves the node's endpoints on ln until Close.
// At most maxConns connections are open at a time (see connLimiter).
func serveHTTP(ln net.Listener, c *cluster.Cluster, recent *recentTable, ui *webUI, minPeers, maxConns int, log *slog.Logger, metrics ...prometheus.Collector) *httpServer {
	reg := newRegistry(c, metrics...)
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		n := len(c.Connected())
		if n < minPeers {
			http.Error(w, fmt.Sprintf("not ready: %d of %d peers connected", n, minPeers), http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintf(w, "ready: %d peers connected\n", n)
	})
	mux.HandleFunc("GET /nodes", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		enc.Encode(viewOf(c, recent))
	})
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	if ui != nil {
		ui.register(mux, c, recent)
	}
	limit := newConnLimiter(maxConns, log)
	s := &httpServer{ln: ln, limit: limit, done: make(chan struct{}),
		srv: &http.Server{Handler: mux,
			ReadHeaderTimeout: httpReadHeaderTimeout, ReadTimeout: httpReadTimeout,
			WriteTimeout: httpWriteTimeout, IdleTimeout: httpIdleTimeout,
			MaxHeaderBytes: httpMaxHeaderBytes, ConnState: limit.connState,
			ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelDebug)}}
	go func() {
		defer close(s.done)
		if err := s.srv.Serve(limit.listener(ln)); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("http server stopped", "err", err)
		}
	}()
	log.Info("http listening", "addr", ln.Addr().String(), "max_conns", maxConns)
	return s
}
