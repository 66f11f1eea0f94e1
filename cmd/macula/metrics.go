package main

import (
	"maps"
	"runtime"
	"runtime/debug"
	"slices"
	"strings"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	cluster "github.com/macula-io/cluster"
	"github.com/macula-io/cluster/mesh"
)

// collector exports the library's counters at scrape time; the library
// itself stays free of Prometheus. The strategy's counters come from
// Stats().Discovery, whatever the strategy: macula_<strategy>_<counter>_total
// and macula_<strategy>_packets_rejected_total{reason}. Every labelled series
// exists (at 0) from the start, because the library reports every key from
// Start.
type collector struct {
	c        *cluster.Cluster
	strategy string
	counters map[string]*prometheus.Desc // by discovery counter name
	rejected *prometheus.Desc
	peers    *prometheus.Desc
}

var (
	descLinksUp    = prometheus.NewDesc("macula_mesh_links_up_total", "Mesh links established.", nil, nil)
	descLinksDown  = prometheus.NewDesc("macula_mesh_links_down_total", "Mesh links lost, by reason.", []string{"reason"}, nil)
	descHSFail     = prometheus.NewDesc("macula_mesh_handshake_failures_total", "Mesh handshakes failed, by reason (crossed dials are not failures: see macula_mesh_duplicate_links_total).", []string{"reason"}, nil)
	descProto      = prometheus.NewDesc("macula_mesh_protocol_errors_total", "Mesh links closed for a bad frame after the handshake, by reason.", []string{"reason"}, nil)
	descRelinks    = prometheus.NewDesc("macula_mesh_link_replacements_total", "Links replaced by a newer connection of the same peer incarnation, without nodedown/nodeup.", nil, nil)
	descDuplicates = prometheus.NewDesc("macula_mesh_duplicate_links_total", "Connections dropped because the pair already had a link or a winning dial (normal with simultaneous dials).", nil, nil)
	descDials      = prometheus.NewDesc("macula_mesh_dials_total", "Outbound TCP connection attempts.", nil, nil)
	descDialFails  = prometheus.NewDesc("macula_mesh_dial_failures_total", "Outbound TCP connection attempts that failed.", nil, nil)
	descRestarts   = prometheus.NewDesc("macula_mesh_connect_restarts_total", "Outbound TCP connects restarted because the peer was heard again while the connect waited on a SYN retransmission.", nil, nil)
	descPending    = prometheus.NewDesc("macula_mesh_pending_handshakes", "Inbound handshakes in progress.", nil, nil)
	descMsgs       = prometheus.NewDesc("macula_mesh_messages_total", "Mesh messages, by direction.", []string{"direction"}, nil)
	descMsgBytes   = prometheus.NewDesc("macula_mesh_message_bytes_total", "Mesh message payload bytes, by direction.", []string{"direction"}, nil)
	descDiscovered = prometheus.NewDesc("macula_discovered_nodes", "Nodes the strategy currently reports.", nil, nil)
	descConnected  = prometheus.NewDesc("macula_connected_nodes", "Nodes with a live mesh link.", nil, nil)
	descEvents     = prometheus.NewDesc("macula_events_total", "Membership events emitted.", nil, nil)
	descDropped    = prometheus.NewDesc("macula_events_dropped_total", "Events a slow Events-channel reader missed.", nil, nil)
	descPanics     = prometheus.NewDesc("macula_event_handler_panics_total", "OnEvent calls that panicked (recovered).", nil, nil)
	descProbes     = prometheus.NewDesc("macula_mesh_probes_total", "Failure detector probes of this node, by outcome (sent, acked, failed; indirect: ping-reqs sent).", []string{"outcome"}, nil)
	descSuspicions = prometheus.NewDesc("macula_mesh_suspicions_total", "Members that became suspect here (the failure detector's own or gossiped).", nil, nil)
	descDeadVerd   = prometheus.NewDesc("macula_mesh_dead_total", "Members the failure detector declared dead here (nodedown timeout).", nil, nil)
	descRefutes    = prometheus.NewDesc("macula_mesh_refutes_total", "Suspicions of this node that it refuted.", nil, nil)
	descLateTicks  = prometheus.NewDesc("macula_mesh_late_ticks_total", "Failure detector timers that fired late (this process was starved).", nil, nil)
	descHealth     = prometheus.NewDesc("macula_mesh_local_health", "Lifeguard local health score: 0 healthy; the probe timeouts are stretched by score+1.", nil, nil)
	descReconnects = prometheus.NewDesc("macula_mesh_link_reconnects_total", "Links re-established under a live member after a break, without nodedown/nodeup.", nil, nil)
	descHandshake  = prometheus.NewDesc("macula_mesh_handshake_duration_seconds", "Durations of the successful mesh handshakes (TCP connection to admitted link), both directions.", nil, nil)
)

// handshakeBuckets are mesh.HandshakeBuckets in seconds.
var handshakeBuckets = func() []float64 {
	b := make([]float64, len(mesh.HandshakeBuckets))
	for i, d := range mesh.HandshakeBuckets {
		b[i] = d.Seconds()
	}
	return b
}()

// newBuildInfo is macula_build_info: 1, labelled with the module version,
// the VCS commit and the Go version the binary was built with.
func newBuildInfo() prometheus.Collector {
	version, commit, goVersion := "unknown", "unknown", runtime.Version()
	if bi, ok := debug.ReadBuildInfo(); ok {
		version = bi.Main.Version
		if version == "" || version == "(devel)" {
			version = "devel"
		}
		for _, s := range bi.Settings {
			if s.Key == "vcs.revision" {
				commit = s.Value
			}
		}
	}
	return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "macula_build_info",
		Help:        "Always 1; the labels describe the macula binary.",
		ConstLabels: prometheus.Labels{"version": version, "commit": commit, "goversion": goVersion}},
		func() float64 { return 1 })
}

// newRegistry is what /metrics serves: the node's collector, the Go
// runtime's and the process's collectors and macula_build_info.
func newRegistry(c *cluster.Cluster, extra ...prometheus.Collector) *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(newCollector(c), newBuildInfo(),
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	reg.MustRegister(extra...)
	return reg
}

// hookMetrics are the --on-event counters: macula_event_hook_runs_total
// by result (ok, failed, timeout, dropped), every one from the start.
func hookMetrics(h *eventHook) []prometheus.Collector {
	var out []prometheus.Collector
	for result, v := range map[string]*atomic.Uint64{"ok": &h.ok, "failed": &h.failed, "timeout": &h.timedOut, "dropped": &h.dropped} {
		out = append(out, prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "macula_event_hook_runs_total",
			Help:        "--on-event commands by result (dropped: the queue was full, or shutdown).",
			ConstLabels: prometheus.Labels{"result": result}}, func() float64 { return float64(v.Load()) }))
	}
	return out
}

// viewMetrics count the cluster-view reports refused (view.go).
func viewMetrics(v *clusterView) []prometheus.Collector {
	return []prometheus.Collector{prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "macula_cluster_view_reports_refused_total",
		Help: "Link reports from peers refused: malformed, naming another node, too large or too frequent."},
		func() float64 { return float64(v.dropped.Load()) })}
}

func newCollector(c *cluster.Cluster) *collector {
	st := c.Stats()
	name := metricName(st.Strategy)
	col := &collector{c: c, strategy: st.Strategy, counters: make(map[string]*prometheus.Desc)}
	for k := range st.Discovery.Counters {
		col.counters[k] = prometheus.NewDesc("macula_"+name+"_"+metricName(k)+"_total",
			"Strategy counter "+k+" of the "+st.Strategy+" strategy.", nil, nil)
	}
	col.rejected = prometheus.NewDesc("macula_"+name+"_packets_rejected_total",
		"Input dropped by the "+st.Strategy+" strategy, by reason.", []string{"reason"}, nil)
	col.peers = prometheus.NewDesc("macula_"+name+"_peers", "Peers the "+st.Strategy+" strategy reports now.", nil, nil)
	return col
}

// metricName keeps [a-z0-9_] of s, the rest becomes '_'.
func metricName(s string) string {
	return strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '_' {
			return r
		}
		if r >= 'A' && r <= 'Z' {
			return r + 'a' - 'A'
		}
		return '_'
	}, s)
}

func (col *collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descLinksUp, descLinksDown, descHSFail, descProto, descDuplicates, descRelinks,
		descDials, descDialFails, descRestarts, descPending, descMsgs, descMsgBytes, descDiscovered, descConnected,
		descEvents, descDropped, descPanics, descHandshake, col.rejected, col.peers,
		descProbes, descSuspicions, descDeadVerd, descRefutes, descLateTicks, descHealth, descReconnects} {
		ch <- d
	}
	for _, d := range col.counters {
		ch <- d
	}
}

func (col *collector) Collect(ch chan<- prometheus.Metric) {
	st := col.c.Stats()
	counter := func(d *prometheus.Desc, v uint64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	gauge := func(d *prometheus.Desc, v float64) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v)
	}
	for _, k := range slices.Sorted(maps.Keys(col.counters)) {
		counter(col.counters[k], st.Discovery.Counters[k])
	}
	for reason, n := range st.Discovery.Rejected {
		counter(col.rejected, n, reason)
	}
	gauge(col.peers, float64(st.Discovery.Peers))
	ms := st.Mesh
	counter(descLinksUp, ms.LinksUp)
	for reason, n := range ms.LinksDown {
		counter(descLinksDown, n, reason)
	}
	for reason, n := range ms.HandshakeFailures {
		counter(descHSFail, n, reason)
	}
	for reason, n := range ms.ProtocolErrors {
		counter(descProto, n, reason)
	}
	counter(descDuplicates, ms.DuplicateLinks)
	counter(descRelinks, ms.LinkReplacements)
	counter(descDials, ms.Dials)
	counter(descDialFails, ms.DialFailures)
	counter(descRestarts, ms.ConnectRestarts)
	gauge(descPending, float64(ms.PendingHandshakes))
	counter(descMsgs, ms.MessagesSent, "sent")
	counter(descMsgs, ms.MessagesReceived, "received")
	counter(descMsgBytes, ms.BytesSent, "sent")
	counter(descMsgBytes, ms.BytesReceived, "received")
	gauge(descDiscovered, float64(len(col.c.Discovered())))
	gauge(descConnected, float64(len(col.c.Connected())))
	ps := ms.Probes
	counter(descProbes, ps.Sent, "sent")
	counter(descProbes, ps.Acked, "acked")
	counter(descProbes, ps.Failed, "failed")
	counter(descProbes, ps.Indirect, "indirect")
	counter(descSuspicions, ps.Suspicions)
	counter(descDeadVerd, ps.Dead)
	counter(descRefutes, ps.Refutes)
	counter(descLateTicks, ps.LateTicks)
	gauge(descHealth, float64(ps.Health))
	counter(descReconnects, ps.LinkReconnects)
	counter(descEvents, st.Events)
	counter(descDropped, st.EventsDropped)
	counter(descPanics, st.EventPanics)
	hs := ms.Handshakes
	cum, buckets := uint64(0), make(map[float64]uint64, len(handshakeBuckets))
	for i, le := range handshakeBuckets {
		cum += hs.Counts[i]
		buckets[le] = cum
	}
	ch <- prometheus.MustNewConstHistogram(descHandshake, hs.Count, hs.Sum.Seconds(), buckets)
}
