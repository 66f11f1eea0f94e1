package gossip

import (
	"context"
	"net"
	"net/netip"
	"slices"
	"time"
)

// Host names in unsigned heartbeats are resolved, bounded: at most
// maxLookups lookups at once, each at most lookupTimeout, results (also
// failures) cached for nameTTL in a table of at most maxNames names. While
// a node's name is not resolved yet it is in the table but not reported;
// its next heartbeat after the answer decides. A flood of distinct names
// costs at most maxLookups queries in flight and maxNames per nameTTL.
var (
	maxLookups    = 2
	lookupTimeout = time.Second
	nameTTL       = time.Minute
	maxNames      = 256
)

// nameState is a cached lookup (owned by the table goroutine).
type nameState struct {
	addrs   []netip.Addr
	at      time.Time
	pending bool
}

// nameResult is a finished lookup.
type nameResult struct {
	host  string
	addrs []netip.Addr
	at    time.Time
}

// lookupFunc resolves a host name (net.DefaultResolver.LookupNetIP).
type lookupFunc func(ctx context.Context, host string) ([]netip.Addr, error)

func defaultLookup(ctx context.Context, host string) ([]netip.Addr, error) {
	return net.DefaultResolver.LookupNetIP(ctx, "ip", host)
}

// checkHost decides whether a node advertising addr in an unsigned
// heartbeat from src may be dialled. wait means a host name is being
// resolved: ask again on the node's next heartbeat. Table goroutine only.
func (g *Gossip) checkHost(addr string, src netip.Addr, now time.Time) (ok, wait bool) {
	if g.s.foreign {
		return true, false
	}
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false, false
	}
	src = src.Unmap().WithZone("")
	own := g.own.Load()
	if host == "localhost" {
		return src.IsLoopback() || own.has(src), false
	}
	if h, err := netip.ParseAddr(host); err == nil {
		h = h.Unmap().WithZone("")
		return h == src || (own.has(h) && own.has(src)), false
	}
	ns := g.names[host]
	if ns != nil && !ns.pending && now.Sub(ns.at) <= nameTTL {
		for _, a := range ns.addrs {
			if a == src || (own.has(a) && own.has(src)) {
				return true, false
			}
		}
		return false, false
	}
	if ns == nil || !ns.pending {
		g.startLookup(host, now)
	}
	return false, true
}

// startLookup resolves host in the background if the bounds allow.
func (g *Gossip) startLookup(host string, now time.Time) {
	if g.lookups >= maxLookups {
		return
	}
	if _, ok := g.names[host]; !ok && len(g.names) >= maxNames {
		for h, ns := range g.names {
			if !ns.pending && now.Sub(ns.at) > nameTTL {
				delete(g.names, h)
			}
		}
		if len(g.names) >= maxNames {
			return
		}
	}
	g.names[host] = &nameState{pending: true}
	g.lookups++
	g.wg.Add(1)
	go func() {
		defer g.wg.Done()
		ctx, cancel := context.WithTimeout(g.ctx, lookupTimeout)
		defer cancel()
		addrs, _ := g.s.lookup(ctx, host)
		for i, a := range addrs {
			addrs[i] = a.Unmap().WithZone("")
		}
		addrs = slices.Clip(addrs)
		select {
		case g.resolved <- nameResult{host: host, addrs: addrs, at: time.Now()}:
		case <-g.done:
		}
	}()
}

// resolvedName stores a finished lookup. Table goroutine only.
func (g *Gossip) resolvedName(r nameResult) {
	g.lookups--
	g.names[r.host] = &nameState{addrs: r.addrs, at: r.at}
}
