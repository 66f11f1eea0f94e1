package cluster_test

import (
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/macula-io/cluster"
	"github.com/macula-io/cluster/gossip"
	"github.com/macula-io/cluster/mesh"
)

// TestGossipSSRF: unsigned heartbeats from 127.0.0.1 naming 100 victims at
// 127.0.0.77 (a listener that counts connections), 10 packets each, reach
// 5 nodes on lo. Pass: at most 3 connections per node to the victim over
// the test (before: every node dialled every name, thousands).
func TestGossipSSRF(t *testing.T) {
	t.Run("default", func(t *testing.T) { ssrf(t, false, 3) })
	// With AcceptForeignHosts (NAT) the fakes are dialled, but one
	// connection at a time per address with backoff, whatever the names.
	t.Run("accept foreign", func(t *testing.T) { ssrf(t, true, 10) })
}

func ssrf(t *testing.T, foreign bool, perNode int64) {
	ln, err := net.Listen("tcp", "127.0.0.77:0")
	if err != nil {
		t.Skipf("cannot bind 127.0.0.77 on lo: %v", err)
	}
	var conns atomic.Int64
	var wg sync.WaitGroup
	defer wg.Wait()
	defer ln.Close()
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			conns.Add(1)
			c.Close()
		}
	}()
	victimPort := ln.Addr().(*net.TCPAddr).Port

	port := freeUDPPort(t)
	const nodes = 5
	var ns []*node
	for i := range nodes {
		ns = append(ns, start(t, cluster.Config{Strategy: cluster.StrategyGossip,
			Gossip: gossip.Config{Interfaces: []string{"lo"}, Port: port, Interval: 200 * time.Millisecond,
				Expiry: 10 * time.Second, AcceptForeignHosts: foreign},
			Mesh: mesh.Config{Name: fmt.Sprintf("n%d@127.0.0.1", i), Cookie: "c", Listen: "127.0.0.1:0"}}))
	}
	conn, err := net.DialUDP("udp4", nil, &net.UDPAddr{IP: net.IPv4(230, 1, 1, 251), Port: port})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if err := pinMulticastToLoopback(conn); err != nil {
		t.Fatal(err)
	}
	const names, rounds = 100, 10
	for r := range rounds {
		for i := range names {
			pkt := gossip.AppendHeartbeat(nil, fmt.Sprintf("victim%d@127.0.0.77:%d", i, victimPort), nil)
			if _, err := conn.Write(pkt); err != nil {
				t.Fatal(err)
			}
			if i%50 == 49 {
				time.Sleep(5 * time.Millisecond) // stay below the socket buffer
			}
		}
		_ = r
		time.Sleep(100 * time.Millisecond)
	}
	// Every node heard the fakes (discovered, not dialable); let dialling
	// run for a while, bounded.
	for _, n := range ns {
		n.rec.waitFor(t, wait, "fakes discovered", func(evs []cluster.Event) bool {
			return count(evs, cluster.Discovered, "victim99@127.0.0.77") == 1
		})
	}
	time.Sleep(3 * time.Second)
	var undialable, dials uint64
	for _, n := range ns {
		st := n.c.Stats()
		undialable += st.Discovery.Rejected["undialable"]
		dials += st.Mesh.Dials
	}
	got := conns.Load()
	t.Logf("SSRF (accept foreign %v): %d names x %d packets to %d nodes: %d connections to the victim (%d per node), %d undialable, %d mesh dials in all",
		foreign, names, rounds, nodes, got, got/nodes, undialable, dials)
	if got > perNode*nodes {
		t.Errorf("%d connections to the victim, want <= %d (%d per node)", got, perNode*nodes, perNode)
	}
	want := uint64(names * nodes)
	if foreign {
		want = 0
	}
	if undialable != want {
		t.Errorf("undialable = %d, want %d", undialable, want)
	}
}
