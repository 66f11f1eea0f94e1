package main

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"time"

	cluster "github.com/macula-io/cluster"
	"github.com/macula-io/cluster/gossip"
	"github.com/macula-io/cluster/internal/mcast"
)

type checkStatus int

const (
	statusOK checkStatus = iota
	statusWarn
	statusFail
)

type doctor struct {
	out    io.Writer
	failed int
	warned int
}

func (d *doctor) report(s checkStatus, title, detail, fix string) {
	tag := map[checkStatus]string{statusOK: "[ ok ]", statusWarn: "[warn]", statusFail: "[FAIL]"}[s]
	fmt.Fprintf(d.out, "%s %s\n", tag, title)
	for _, l := range strings.Split(strings.TrimRight(detail, "\n"), "\n") {
		if l != "" {
			fmt.Fprintf(d.out, "       %s\n", l)
		}
	}
	if fix != "" && s != statusOK {
		fmt.Fprintf(d.out, "       fix: %s\n", fix)
	}
	switch s {
	case statusFail:
		d.failed++
	case statusWarn:
		d.warned++
	}
}

func cmdDoctor(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("doctor", stderr)
	ifaces := fs.String("interface", "", "gossip interfaces to check, comma-separated (default: MACULA_GOSSIP_IF, else every up, multicast-capable, non-loopback one)")
	group := fs.String("multicast-addr", "", "gossip group (default 230.1.1.251; env MACULA_GOSSIP_ADDR)")
	port := fs.Int("port", 0, "gossip UDP port (default 45892; env MACULA_GOSSIP_PORT)")
	secret := fs.String("secret", "", "gossip secret, to check that one is configured")
	cookie := fs.String("cookie", "", "mesh cookie, to check that one is configured")
	listen := fs.String("listen", "", "mesh listen address to check (default the range 9100-9200; env MACULA_LISTEN)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	base := cluster.Config{}
	base.Gossip.Interfaces, base.Gossip.Group, base.Gossip.Port = splitComma(*ifaces), *group, *port
	if *secret != "" {
		base.Gossip.Secrets = []string{*secret}
	}
	gcfg, err := gossip.ConfigFromEnv(base.Gossip, os.Getenv)
	if err != nil {
		return usageError{err}
	}
	grp := gcfg.Group
	if grp == "" {
		grp = "230.1.1.251"
	}
	gport := gcfg.Port
	if gport == 0 {
		gport = 45892
	}
	d := &doctor{out: stdout}
	fmt.Fprintf(stdout, "macula doctor %s (%s/%s): gossip %s, mesh %s\n\n", version(), runtime.GOOS, runtime.GOARCH,
		net.JoinHostPort(grp, fmt.Sprint(gport)), orDefault(*listen, os.Getenv("MACULA_LISTEN"), "ports 9100-9200"))

	gaddr, err := netip.ParseAddr(grp)
	valid := err == nil && gaddr.IsMulticast()
	chosen := d.checkInterfaces(mcast.Want{Names: gcfg.Interfaces, IPv4: !valid || gaddr.Is4()})
	portGroup := gaddr
	if !valid {
		d.report(statusFail, "multicast group "+grp, "not a multicast address", "use a group in 224.0.0.0/4 (default 230.1.1.251)")
		portGroup = netip.MustParseAddr(gossip.DefaultGroup)
	} else if gaddr.Is4() {
		d.checkRoute(gaddr, gcfg.Interfaces)
	}
	d.checkUDPPort(portGroup, gport)
	d.checkMeshPorts(orDefault(*listen, os.Getenv("MACULA_LISTEN"), ""))
	if valid && gaddr.Is4() {
		for _, ifi := range chosen {
			d.selfTest(ctx, ifi, gaddr, gport)
		}
	}
	d.checkSecret(*secret, gcfg.Secrets)
	d.checkCookie(*cookie)

	fmt.Fprintf(stdout, "\n%d failed, %d warnings\n", d.failed, d.warned)
	if d.failed > 0 {
		return checkFailed{errors.New("checks failed")}
	}
	return nil
}

func orDefault(vals ...string) string {
	for _, v := range vals {
		if v != "" {
			return v
		}
	}
	return ""
}

// checkInterfaces lists the interfaces and returns the ones gossip would
// use: the same selection (mcast.Want) as gossip's.
func (d *doctor) checkInterfaces(want mcast.Want) []mcast.Interface {
	ifs, err := mcast.List()
	if err != nil {
		d.report(statusFail, "interfaces", err.Error(), "")
		return nil
	}
	chosen, missing := want.Select(ifs)
	var b strings.Builder
	for _, ifi := range ifs {
		var flags []string
		for _, f := range []struct {
			f net.Flags
			s string
		}{{net.FlagUp, "up"}, {net.FlagRunning, "running"}, {net.FlagMulticast, "multicast"}, {net.FlagBroadcast, "broadcast"}, {net.FlagLoopback, "loopback"}} {
			if ifi.Flags&f.f != 0 {
				flags = append(flags, f.s)
			}
		}
		var addrs []string
		for _, a := range ifi.Addrs {
			addrs = append(addrs, a.String())
		}
		mark := " "
		if slices.ContainsFunc(chosen, func(c mcast.Interface) bool { return c.Index == ifi.Index }) {
			mark = "*"
		}
		fmt.Fprintf(&b, "%s %-10s %-32s %s\n", mark, ifi.Name, strings.Join(flags, ","), strings.Join(addrs, " "))
	}
	b.WriteString("(* = used for gossip)\n")
	if len(missing) > 0 {
		d.report(statusFail, "interfaces", b.String()+fmt.Sprintf("interface %q does not exist", missing[0]),
			"pass an existing name to --interface / MACULA_GOSSIP_IF (see the list above)")
		return chosen
	}
	switch {
	case len(chosen) == 0 && len(want.Names) > 0:
		d.report(statusFail, "interfaces", b.String()+"the named interfaces are down", "bring them up: ip link set IFACE up")
	case len(chosen) == 0:
		d.report(statusFail, "interfaces", b.String()+"no up, running, multicast-capable, non-loopback interface with an IPv4 address",
			"connect a network, or name one with --interface (e.g. lo for a single-host cluster)")
	default:
		d.report(statusOK, "interfaces", b.String(), "")
	}
	return chosen
}

// checkRoute looks for a route that covers the group (Linux: /proc/net/route).
func (d *doctor) checkRoute(group netip.Addr, pinned []string) {
	if runtime.GOOS != "linux" {
		d.report(statusOK, "multicast route", "not checked on "+runtime.GOOS, "")
		return
	}
	f, err := os.Open("/proc/net/route")
	if err != nil {
		d.report(statusWarn, "multicast route", err.Error(), "")
		return
	}
	defer f.Close()
	g := group.As4()
	gv := uint32(g[0]) | uint32(g[1])<<8 | uint32(g[2])<<16 | uint32(g[3])<<24 // /proc/net/route is little-endian
	var via []string
	defaultVia := ""
	sc := bufio.NewScanner(f)
	sc.Scan() // header
	for sc.Scan() {
		fl := strings.Fields(sc.Text())
		if len(fl) < 8 {
			continue
		}
		var dst, mask uint32
		fmt.Sscanf(fl[1], "%X", &dst)
		fmt.Sscanf(fl[7], "%X", &mask)
		if mask == 0 {
			defaultVia = fl[0]
			continue
		}
		if gv&mask == dst {
			via = append(via, fl[0])
		}
	}
	switch {
	case len(via) > 0:
		d.report(statusOK, "multicast route", "a route covers "+group.String()+" via "+strings.Join(via, ", "), "")
	case len(pinned) > 0:
		d.report(statusOK, "multicast route", "no 224.0.0.0/4 route, but gossip is pinned to "+strings.Join(pinned, ",")+" (the interface is chosen per packet), so none is needed", "")
	case defaultVia != "":
		d.report(statusWarn, "multicast route", "no 224.0.0.0/4 route: multicast follows the default route via "+defaultVia,
			"ip route add 224.0.0.0/4 dev IFACE, or pin gossip with --interface")
	default:
		d.report(statusFail, "multicast route", "no route covers "+group.String(),
			"ip route add 224.0.0.0/4 dev IFACE, or pin gossip with --interface")
	}
}

// checkUDPPort binds the gossip port as gossip does (package mcast).
func (d *doctor) checkUDPPort(group netip.Addr, port int) {
	c, err := mcast.Listen(context.Background(), mcast.Config{Group: group, Port: port})
	if err != nil {
		d.report(statusFail, fmt.Sprintf("gossip port %d/udp", port), err.Error(),
			"another program holds the port without SO_REUSEADDR (find it with `ss -ulpn sport = :PORT`), or pick another port with --port / MACULA_GOSSIP_PORT")
		return
	}
	c.Close()
	d.report(statusOK, fmt.Sprintf("gossip port %d/udp", port), "can be bound (shared with other macula nodes on this host)", "")
}

func (d *doctor) checkMeshPorts(listen string) {
	if listen != "" {
		ln, err := net.Listen("tcp", listen)
		if err != nil {
			d.report(statusFail, "mesh listen "+listen, err.Error(), "free the port or choose another with --listen / MACULA_LISTEN")
			return
		}
		ln.Close()
		d.report(statusOK, "mesh listen "+listen, "can be bound", "")
		return
	}
	free := 0
	first := 0
	for p := 9100; p <= 9200; p++ {
		ln, err := net.Listen("tcp", fmt.Sprintf(":%d", p))
		if err != nil {
			continue
		}
		ln.Close()
		if free == 0 {
			first = p
		}
		free++
	}
	if free == 0 {
		d.report(statusFail, "mesh ports 9100-9200/tcp", "all 101 ports are in use",
			"stop other nodes, or choose a port with --listen / MACULA_LISTEN")
		return
	}
	d.report(statusOK, "mesh ports 9100-9200/tcp", fmt.Sprintf("%d free, the next node takes %d; peers must reach them (firewall: allow 9100-9200/tcp)", free, first), "")
}

// selfTest sends a probe to the group on one interface, with loopback on,
// and expects to receive it on a socket joined on that interface. The probe
// is not a heartbeat (running nodes count it as malformed and drop it).
func (d *doctor) selfTest(ctx context.Context, ifi mcast.Interface, group netip.Addr, port int) {
	title := fmt.Sprintf("send/receive on %s (%s:%d)", ifi.Name, group, port)
	c, err := mcast.Listen(ctx, mcast.Config{Group: group, Port: port, TTL: 1})
	if err != nil {
		d.report(statusFail, title, err.Error(), "see the port check above")
		return
	}
	defer c.Close()
	if err := c.Join(&ifi.Interface); err != nil {
		d.report(statusFail, title, "join group: "+err.Error(), "the interface must support multicast: ip link set "+ifi.Name+" multicast on")
		return
	}
	nonce := make([]byte, 8)
	rand.Read(nonce)
	probe := []byte("MACULA_DOCTOR:" + hex.EncodeToString(nonce))
	start := time.Now()
	deadline := start.Add(2 * time.Second)
	buf := make([]byte, 1500)
	for attempt := 0; attempt < 3; attempt++ {
		// Out of ifi only, from its address, as gossip sends.
		if err := c.WriteTo(probe, ifi.Index, ifi.Source4(), c.Group()); err != nil {
			d.report(statusFail, title, "send: "+err.Error(), "check the route and that the interface is up")
			return
		}
		c.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
		for time.Now().Before(deadline) {
			p, err := c.Read(buf)
			if err != nil {
				break
			}
			if string(buf[:p.N]) == string(probe) {
				d.report(statusOK, title, fmt.Sprintf("probe looped back in %v", time.Since(start).Round(time.Microsecond)), "")
				return
			}
		}
	}
	d.report(statusFail, title, "sent 3 probes, none came back within 2s",
		"a firewall may drop multicast: allow udp to "+group.String()+":"+fmt.Sprint(port)+" (e.g. iptables -I INPUT -d 224.0.0.0/4 -j ACCEPT)")
}

func (d *doctor) checkSecret(flagSecret string, secrets []string) {
	src := ""
	switch {
	case flagSecret != "":
		src = "--secret"
	case os.Getenv("MACULA_GOSSIP_SECRET") != "":
		src = "MACULA_GOSSIP_SECRET"
	case os.Getenv("CLUSTER_SECRET") != "":
		src = "CLUSTER_SECRET"
	}
	if len(secrets) == 0 {
		d.report(statusWarn, "gossip secret", "none: heartbeats are unsigned and any host on the LAN can announce nodes",
			"set MACULA_GOSSIP_SECRET or CLUSTER_SECRET (the same on every node)")
		return
	}
	d.report(statusOK, "gossip secret", fmt.Sprintf("%d key(s) from %s; heartbeats are signed with HMAC-SHA256", len(secrets), src), "")
}

func (d *doctor) checkCookie(flagCookie string) {
	switch {
	case flagCookie != "":
		d.report(statusOK, "mesh cookie", "from --cookie", "")
		return
	case os.Getenv("MACULA_COOKIE") != "":
		d.report(statusOK, "mesh cookie", "from MACULA_COOKIE", "")
		return
	case os.Getenv("RELEASE_COOKIE") != "":
		d.report(statusOK, "mesh cookie", "from RELEASE_COOKIE", "")
		return
	}
	home, err := os.UserHomeDir()
	if err != nil {
		d.report(statusFail, "mesh cookie", "no MACULA_COOKIE/RELEASE_COOKIE and no home directory: "+err.Error(), "set MACULA_COOKIE")
		return
	}
	path := filepath.Join(home, ".macula.cookie")
	st, err := os.Stat(path)
	switch {
	case errors.Is(err, os.ErrNotExist):
		d.report(statusWarn, "mesh cookie", path+" does not exist yet: the first node creates a random one, so nodes on other hosts will not share it",
			"set the same MACULA_COOKIE (or RELEASE_COOKIE) on every node")
	case err != nil:
		d.report(statusFail, "mesh cookie", err.Error(), "")
	case st.Mode().Perm()&0o077 != 0:
		d.report(statusWarn, "mesh cookie", fmt.Sprintf("from %s, but its mode is %v: other users can read it", path, st.Mode().Perm()), "chmod 600 "+path)
	default:
		d.report(statusOK, "mesh cookie", "from "+path, "")
	}
}
