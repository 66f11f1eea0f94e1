package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/macula-io/cluster/discovery"
	"github.com/macula-io/cluster/gossip"
	"github.com/macula-io/cluster/internal/mcast"
	"github.com/macula-io/cluster/mesh"
)

// What `macula doctor` hears on the group during --listen-for, by source
// address: the nodes the heartbeats name, and whether they pass our secret.
type heardSource struct {
	src      netip.Addr
	nodes    map[string]discovery.Peer // node field -> parsed
	ok, bad  int                       // heartbeats that pass / fail our secret
	unsigned int                       // of bad: no HMAC at all
	signed   int                       // heartbeats with an HMAC (when we have no secret)
}

const (
	maxHeardSources = 256
	maxHeardNodes   = 16 // per source
	probeTimeout    = 3 * time.Second
	maxProbes       = 64
)

// listen joins the group on the interfaces and collects heartbeats for d.
func (dr *doctor) listen(ctx context.Context, ifs []mcast.Interface, group netip.Addr, port int, secrets []string, d time.Duration) (map[netip.Addr]*heardSource, error) {
	c, err := mcast.Listen(ctx, mcast.Config{Group: group, Port: port})
	if err != nil {
		return nil, err
	}
	defer c.Close()
	for _, ifi := range ifs {
		if err := c.Join(&ifi.Interface); err != nil {
			return nil, fmt.Errorf("join %s on %s: %w", group, ifi.Name, err)
		}
	}
	ours, none := gossip.NewKeyring(secrets...), gossip.NewKeyring()
	heard := map[netip.Addr]*heardSource{}
	buf := make([]byte, gossip.MaxPacketSize+1)
	end := time.Now().Add(d)
	for time.Now().Before(end) {
		c.SetReadDeadline(end)
		p, err := c.Read(buf)
		if err != nil {
			if ctx.Err() != nil {
				return heard, ctx.Err()
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				break
			}
			return heard, err
		}
		pkt := buf[:p.N]
		node, err := gossip.ParseHeartbeat(pkt, none) // the claim, unverified
		if err != nil {
			continue // not a heartbeat (a doctor's probe, noise)
		}
		src := p.Src.Addr()
		h := heard[src]
		if h == nil {
			if len(heard) >= maxHeardSources {
				continue
			}
			h = &heardSource{src: src, nodes: map[string]discovery.Peer{}}
			heard[src] = h
		}
		if peer, err := discovery.ParseNode(node); err == nil && len(h.nodes) < maxHeardNodes {
			h.nodes[node] = peer
		}
		if strings.Contains(string(pkt), "|") {
			h.signed++
		}
		switch _, err := gossip.ParseHeartbeat(pkt, ours); {
		case err == nil:
			h.ok++
		case errors.Is(err, gossip.ErrUnsigned):
			h.bad++
			h.unsigned++
		default:
			h.bad++
		}
	}
	return heard, nil
}

// reportHeard reports the nodes heard and the sources that fail the secret.
// It returns the nodes that pass, to be dialled.
func (dr *doctor) reportHeard(heard map[netip.Addr]*heardSource, secrets []string, secretFix string, d time.Duration, where string) []discovery.Peer {
	srcs := slices.SortedFunc(func(yield func(*heardSource) bool) {
		for _, h := range heard {
			if !yield(h) {
				return
			}
		}
	}, func(a, b *heardSource) int { return a.src.Compare(b.src) })
	var good []discovery.Peer
	var b strings.Builder
	for _, h := range srcs {
		names := slices.Sorted(func(yield func(string) bool) {
			for n := range h.nodes {
				if !yield(n) {
					return
				}
			}
		})
		status := "ok"
		switch {
		case h.bad > 0 && h.ok == 0 && h.unsigned == h.bad:
			status = "FAILS the secret: unsigned"
		case h.bad > 0 && h.ok == 0:
			status = "FAILS the secret: wrong signature"
		case h.bad > 0:
			status = fmt.Sprintf("%d of %d heartbeats fail the secret", h.bad, h.ok+h.bad)
		case len(secrets) == 0 && h.signed > 0:
			status = "signed (this host has no secret)"
		}
		fmt.Fprintf(&b, "%-15s %s  %s\n", h.src, strings.Join(names, ", "), status)
		if h.ok > 0 {
			for _, n := range names {
				good = append(good, h.nodes[n])
			}
		}
	}
	if len(srcs) == 0 {
		dr.report(statusWarn, "nodes heard on "+where, fmt.Sprintf("no heartbeat in %v: no node gossips on this network with this group and port, or multicast does not cross it", d),
			"start a node on another host (macula run) and run this again; compare their group and port with this one's")
		return nil
	}
	dr.report(statusOK, "nodes heard on "+where, fmt.Sprintf("%d source(s) in %v:\n%s", len(srcs), d, b.String()), "")
	for _, h := range srcs {
		if h.bad == 0 {
			if len(secrets) == 0 && h.signed > 0 {
				dr.report(statusFail, "gossip secret of "+h.src.String(),
					"its heartbeats are signed, this host has no secret: a node started here is ignored by it",
					strings.ReplaceAll(secretFix, "{host}", h.src.String()))
			}
			continue
		}
		what := "signed with another secret"
		if h.unsigned == h.bad {
			what = "unsigned (it runs without a secret)"
		}
		dr.report(statusFail, "gossip secret of "+h.src.String(),
			fmt.Sprintf("%d heartbeat(s) %s; this host and it ignore each other", h.bad, what),
			"run the node at "+h.src.String()+" with this host's secret: "+strings.ReplaceAll(secretFix, "{host}", h.src.String()))
	}
	return good
}

// probeCookies dials every heard node with the cookie (a mesh handshake as
// a throwaway node that leaves at once) and reports which refuse it.
func (dr *doctor) probeCookies(ctx context.Context, peers []discovery.Peer, cookie, cookieFix string) {
	var targets []discovery.Peer
	seen := map[string]bool{}
	for _, p := range peers {
		if p.Addr != "" && !seen[p.Addr] && len(targets) < maxProbes {
			seen[p.Addr] = true
			targets = append(targets, p)
		}
	}
	if len(targets) == 0 {
		return
	}
	var nonce [3]byte
	rand.Read(nonce[:])
	type result struct {
		res mesh.ProbeResult
		err error
	}
	results := make([]result, len(targets))
	var wg sync.WaitGroup
	sem := make(chan struct{}, 8)
	for i, p := range targets {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			host, _, _ := net.SplitHostPort(p.Addr)
			name := "macula-doctor-" + hex.EncodeToString(nonce[:]) + "@" + localHostFor(host)
			pctx, cancel := context.WithTimeout(ctx, probeTimeout)
			defer cancel()
			// Advertised address: port 1 of this host, which nobody
			// dials for long (the probe says goodbye at once).
			res, err := mesh.Probe(pctx, p.Addr, name, net.JoinHostPort(localHostFor(host), "1"), cookie, nil)
			results[i] = result{res, err}
		}()
	}
	wg.Wait()
	for i, p := range targets {
		r := results[i]
		title := "mesh cookie at " + p.Name + " (" + p.Addr + ")"
		host, port, _ := net.SplitHostPort(p.Addr)
		switch {
		case r.err == nil:
			dr.report(statusOK, title, "the handshake with this host's cookie succeeded (the node logs macula-doctor up, then left)", "")
		case r.res.Reason == mesh.HSBadCookie:
			dr.report(statusFail, title, "the node refuses this host's cookie: nodes here and it never connect",
				"run the node at "+host+" with this host's cookie: "+strings.ReplaceAll(cookieFix, "{host}", host))
		case r.res.Reason == mesh.HSBadVersion:
			dr.report(statusFail, title, "no common wire version or cipher: "+r.err.Error(),
				"run the same macula version on both hosts (macula version)")
		default:
			dr.report(statusFail, title, "no handshake: "+r.err.Error(),
				"let tcp port "+port+" through on "+host+" (for example: iptables -I INPUT -p tcp --dport "+port+" -j ACCEPT), and check that macula runs there")
		}
	}
}

// localHostFor is the address of this host that reaches host ("127.0.0.1"
// when unknown).
func localHostFor(host string) string {
	c, err := net.Dial("udp", net.JoinHostPort(host, "9"))
	if err != nil {
		return "127.0.0.1"
	}
	defer c.Close()
	a, _ := netip.ParseAddrPort(c.LocalAddr().String())
	if !a.IsValid() {
		return "127.0.0.1"
	}
	return a.Addr().Unmap().String()
}
