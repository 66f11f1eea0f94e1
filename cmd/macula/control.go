package main

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	cluster "github.com/macula-io/cluster"
)

// The control endpoint: `macula run` serves its view (/nodes, /healthz,
// /readyz, /metrics) on loopback by default, so that `macula nodes` on the
// same host needs no flags. It is not --http, the opt-in listener for
// probes and scrapes from elsewhere: it only ever binds a loopback address.
const (
	defaultControl = "127.0.0.1:9180"
	// controlFallbacks more ports after the default one are tried when it
	// is taken (another node on this host): 9181-9189.
	controlFallbacks = 9
	// controlMaxConns caps the control endpoint's connections.
	controlMaxConns = 32
)

// parseControl checks --control: "off", or a loopback host:port.
func parseControl(v string) error {
	if v == "off" {
		return nil
	}
	host, port, err := net.SplitHostPort(v)
	if err != nil {
		return errors.New(`want a loopback host:port (127.0.0.1:9180) or "off"`)
	}
	if _, err := parsePortNumber(port, 0); err != nil {
		return errors.New("want a loopback host:port with a port 0-65535")
	}
	if host != "localhost" {
		a, err := netip.ParseAddr(host)
		if err != nil || !a.IsLoopback() {
			return errors.New("the control endpoint listens on loopback only (127.0.0.1, ::1, localhost); --http serves other addresses")
		}
	}
	return nil
}

// controlCandidates lists the addresses to try for --control v: the
// default address falls back to the next ports, an explicit one does not.
func controlCandidates(v string, explicit bool) []string {
	if v == "off" {
		return nil
	}
	if explicit {
		return []string{v}
	}
	host, port, _ := net.SplitHostPort(v)
	p, _ := strconv.Atoi(port)
	list := []string{v}
	for i := 1; i <= controlFallbacks && p != 0 && p+i <= 65535; i++ {
		list = append(list, net.JoinHostPort(host, strconv.Itoa(p+i)))
	}
	return list
}

// listenFirst binds the first address of candidates that is free.
func listenFirst(candidates []string) (net.Listener, error) {
	var errs []error
	for _, a := range candidates {
		ln, err := net.Listen("tcp", a)
		if err == nil {
			return ln, nil
		}
		errs = append(errs, err)
	}
	return nil, fmt.Errorf("%s: %w", strings.Join(candidates, ", "), errors.Join(errs...))
}

// How long and how many departed members /nodes remembers, as serf keeps
// failed and left members for a while.
const (
	recentFor = 15 * time.Minute
	recentMax = 256
)

// recentTable remembers the members that went down, with the reason,
// until they come back up or recentFor passes. It is fed from the event
// callback and read by the HTTP handlers.
type recentTable struct {
	mu   sync.Mutex
	down map[string]recentMember
}

type recentMember struct {
	Node   string    `json:"node"`
	Addr   string    `json:"addr,omitempty"`
	Reason string    `json:"reason"`
	Since  time.Time `json:"since"`
}

func newRecentTable() *recentTable { return &recentTable{down: map[string]recentMember{}} }

func (r *recentTable) event(e cluster.Event) {
	r.mu.Lock()
	defer r.mu.Unlock()
	switch e.Kind {
	case cluster.NodeUp:
		delete(r.down, e.Node)
	case cluster.NodeDown:
		r.down[e.Node] = recentMember{Node: e.Node, Addr: e.Addr, Reason: e.Reason, Since: e.Time}
		if len(r.down) > recentMax { // forget the oldest
			var oldest string
			for n, m := range r.down {
				if oldest == "" || m.Since.Before(r.down[oldest].Since) {
					oldest = n
				}
			}
			delete(r.down, oldest)
		}
	}
}

// list returns the members down within recentFor of now, oldest first.
func (r *recentTable) list(now time.Time) []recentMember {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := []recentMember{}
	for n, m := range r.down {
		if now.Sub(m.Since) > recentFor {
			delete(r.down, n)
			continue
		}
		out = append(out, m)
	}
	sortRecent(out)
	return out
}

func sortRecent(l []recentMember) {
	slices.SortFunc(l, func(a, b recentMember) int {
		if c := a.Since.Compare(b.Since); c != 0 {
			return c
		}
		return strings.Compare(a.Node, b.Node)
	})
}
