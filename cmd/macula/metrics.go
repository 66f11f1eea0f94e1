package main

import (
	"maps"
	"slices"
	"strings"

	"github.com/prometheus/client_golang/prometheus"

	cluster "github.com/macula-io/cluster"
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
	descDuplicates = prometheus.NewDesc("macula_mesh_duplicate_links_total", "Connections dropped because the pair already had a link or a winning dial (normal with simultaneous dials).", nil, nil)
	descDials      = prometheus.NewDesc("macula_mesh_dials_total", "Outbound TCP connection attempts.", nil, nil)
	descDialFails  = prometheus.NewDesc("macula_mesh_dial_failures_total", "Outbound TCP connection attempts that failed.", nil, nil)
	descPending    = prometheus.NewDesc("macula_mesh_pending_handshakes", "Inbound handshakes in progress.", nil, nil)
	descMsgs       = prometheus.NewDesc("macula_mesh_messages_total", "Mesh messages, by direction.", []string{"direction"}, nil)
	descMsgBytes   = prometheus.NewDesc("macula_mesh_message_bytes_total", "Mesh message payload bytes, by direction.", []string{"direction"}, nil)
	descDiscovered = prometheus.NewDesc("macula_discovered_nodes", "Nodes the strategy currently reports.", nil, nil)
	descConnected  = prometheus.NewDesc("macula_connected_nodes", "Nodes with a live mesh link.", nil, nil)
	descEvents     = prometheus.NewDesc("macula_events_total", "Membership events emitted.", nil, nil)
	descDropped    = prometheus.NewDesc("macula_events_dropped_total", "Events a slow Events-channel reader missed.", nil, nil)
	descPanics     = prometheus.NewDesc("macula_event_handler_panics_total", "OnEvent calls that panicked (recovered).", nil, nil)
)

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
	for _, d := range []*prometheus.Desc{descLinksUp, descLinksDown, descHSFail, descProto, descDuplicates,
		descDials, descDialFails, descPending, descMsgs, descMsgBytes, descDiscovered, descConnected,
		descEvents, descDropped, descPanics, col.rejected, col.peers} {
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
	counter(descDials, ms.Dials)
	counter(descDialFails, ms.DialFailures)
	gauge(descPending, float64(ms.PendingHandshakes))
	counter(descMsgs, ms.MessagesSent, "sent")
	counter(descMsgs, ms.MessagesReceived, "received")
	counter(descMsgBytes, ms.BytesSent, "sent")
	counter(descMsgBytes, ms.BytesReceived, "received")
	gauge(descDiscovered, float64(len(col.c.Discovered())))
	gauge(descConnected, float64(len(col.c.Connected())))
	counter(descEvents, st.Events)
	counter(descDropped, st.EventsDropped)
	counter(descPanics, st.EventPanics)
}
