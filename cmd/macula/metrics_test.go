package main

import (
	"context"
	"log/slog"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	cluster "github.com/macula-io/cluster"
	"github.com/macula-io/cluster/gossip"
	"github.com/macula-io/cluster/mesh"
)

// TestMetricsEveryStrategy: /metrics carries the counters of whatever
// strategy runs, every labelled series exists at 0 before its first event,
// and the exposition passes promlint.
func TestMetricsEveryStrategy(t *testing.T) {
	for _, tc := range []struct {
		cfg  cluster.Config
		want []string
	}{
		{cluster.Config{Strategy: cluster.StrategyStatic, Nodes: []string{"127.0.0.1:1"}},
			[]string{"macula_static_nodes_added_total 0", "macula_static_peers 1"}},
		{cluster.Config{Strategy: cluster.StrategyGossip, Gossip: gossip.Config{Interfaces: []string{"lo"},
			Port: testUDPPort(t), Secrets: []string{"s"}}},
			[]string{`macula_gossip_packets_rejected_total{reason="bad_signature"} 0`, "macula_gossip_heartbeats_sent_total"}},
	} {
		t.Run(tc.cfg.Strategy, func(t *testing.T) {
			cfg := tc.cfg
			cfg.Mesh = mesh.Config{Name: "m@127.0.0.1", Cookie: "c", Listen: "127.0.0.1:0"}
			c, err := cluster.Start(context.Background(), cfg)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			hook := newEventHook("true", time.Second, slog.New(slog.DiscardHandler))
			defer hook.Close()
			reg := newRegistry(c, append(viewMetrics(newClusterView(slog.New(slog.DiscardHandler), nil)), hookMetrics(hook)...)...)
			problems, err := testutil.GatherAndLint(reg)
			if err != nil {
				t.Fatal(err)
			}
			for _, p := range problems {
				t.Errorf("promlint: %s: %s", p.Metric, p.Text)
			}
			var out strings.Builder
			mfs, _ := reg.Gather()
			for _, mf := range mfs {
				for _, m := range mf.GetMetric() {
					out.WriteString(mf.GetName())
					if len(m.GetLabel()) > 0 {
						out.WriteString("{")
						for i, l := range m.GetLabel() {
							if i > 0 {
								out.WriteString(",")
							}
							out.WriteString(l.GetName() + `="` + l.GetValue() + `"`)
						}
						out.WriteString("}")
					}
					v := m.GetCounter().GetValue() + m.GetGauge().GetValue()
					out.WriteString(" " + strings.TrimSuffix(strings.TrimRight(strconvF(v), "0"), ".") + "\n")
				}
			}
			text := out.String()
			for _, w := range append(tc.want,
				`macula_mesh_handshake_failures_total{reason="bad_cookie"} 0`,
				`macula_mesh_links_down_total{reason="timeout"} 0`,
				`macula_mesh_protocol_errors_total{reason="malformed"} 0`,
				"macula_mesh_duplicate_links_total 0", "macula_event_handler_panics_total 0",
				`macula_build_info{commit="`, `macula_event_hook_runs_total{result="dropped"} 0`,
				`macula_event_hook_runs_total{result="timeout"} 0`, "macula_cluster_view_reports_refused_total 0", "go_goroutines ", "go_info{version=", "process_open_fds ") {
				if !strings.Contains(text, w) {
					t.Errorf("metrics lack %q:\n%s", w, text)
				}
			}
		})
	}
}

func strconvF(v float64) string { return strconv.FormatFloat(v, 'f', 6, 64) }

// TestMetricsHandshakeHistogram: macula_mesh_handshake_duration_seconds
// exists with every bucket at 0 from the start and counts the handshakes
// of a link on both nodes.
func TestMetricsHandshakeHistogram(t *testing.T) {
	start := func(name string, nodes ...string) *cluster.Cluster {
		c, err := cluster.Start(context.Background(), cluster.Config{Strategy: cluster.StrategyStatic, Nodes: nodes,
			Mesh: mesh.Config{Name: name, Cookie: "c", Listen: "127.0.0.1:0"}})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	histogram := func(c *cluster.Cluster) (count uint64, buckets int) {
		mfs, err := newRegistry(c).Gather()
		if err != nil {
			t.Fatal(err)
		}
		for _, mf := range mfs {
			if mf.GetName() == "macula_mesh_handshake_duration_seconds" {
				h := mf.GetMetric()[0].GetHistogram()
				return h.GetSampleCount(), len(h.GetBucket())
			}
		}
		t.Fatal("no macula_mesh_handshake_duration_seconds")
		return 0, 0
	}
	a := start("a@127.0.0.1")
	if n, b := histogram(a); n != 0 || b != len(mesh.HandshakeBuckets) {
		t.Fatalf("at start: count %d, %d buckets", n, b)
	}
	b := start("b@127.0.0.1", a.Self().Addr)
	deadline := time.Now().Add(10 * time.Second)
	for {
		na, _ := histogram(a)
		nb, _ := histogram(b)
		if na == 1 && nb == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("handshakes counted: a %d, b %d; want 1 each", na, nb)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
