package main

import (
	"context"
	"strconv"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
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
			reg := prometheus.NewRegistry()
			reg.MustRegister(newCollector(c))
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
				"macula_mesh_duplicate_links_total 0", "macula_event_handler_panics_total 0") {
				if !strings.Contains(text, w) {
					t.Errorf("metrics lack %q:\n%s", w, text)
				}
			}
		})
	}
}

func strconvF(v float64) string { return strconv.FormatFloat(v, 'f', 6, 64) }
