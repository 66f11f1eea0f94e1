package main

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
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
	port := fs.String("port", "", "gossip UDP port (default 45892; env MACULA_GOSSIP_PORT)")
	secret := fs.String("secret", "", "gossip secret (a comma-separated keyring): heartbeats heard are checked against it (env MACULA_GOSSIP_SECRET or CLUSTER_SECRET)")
	secretFile := fs.String("secret-file", "", "read --secret from this file (env MACULA_GOSSIP_SECRET_FILE)")
	cookie := fs.String("cookie", "", "mesh cookie: every node heard is dialled with it (env MACULA_COOKIE, RELEASE_COOKIE, else ~/.macula.cookie if it exists)")
	cookieFile := fs.String("cookie-file", "", "read --cookie from this file (env MACULA_COOKIE_FILE)")
	listen := fs.String("listen", "", "mesh listen address to check (default the range 9100-9200; env MACULA_LISTEN)")
	listenFor := fs.String("listen-for", "3s", "listen this long for the heartbeats of running nodes, ms or Go duration (0: do not listen)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if err := checkDoctorFlags(fs, os.Getenv); err != nil {
		return err
	}
	var listenDur time.Duration
	if *listenFor != "0" {
		v, err := parsePositiveDuration(*listenFor)
		if err != nil {
			return usageError{fmt.Errorf("--listen-for %q: %w", *listenFor, err)}
		}
		listenDur = v.(time.Duration)
	}
	set := map[string]bool{}
	fs.Visit(func(fl *flag.Flag) { set[fl.Name] = true })
	sec, err := resolveDoctorSecret(secretSrc, set, *secret, *secretFile, "CLUSTER_SECRET", os.Getenv)
	if err != nil {
		return err
	}
	ck, err := resolveDoctorSecret(cookieSource, set, *cookie, *cookieFile, "RELEASE_COOKIE", os.Getenv)
	if err != nil {
		return err
	}
	if ck.value == "" {
		if home, err := os.UserHomeDir(); err == nil {
			path := filepath.Join(home, ".macula.cookie")
			if v, err := readSecretFile(path); err == nil {
				ck = doctorSecret{value: v, file: path, display: "~/.macula.cookie"}
			}
		}
	}
	base := cluster.Config{}
	base.Gossip.Interfaces, base.Gossip.Group = splitComma(*ifaces), *group
	if *port != "" {
		p, _ := parsePort(*port) // checked by checkDoctorFlags
		base.Gossip.Port = p.(int)
	}
	if sec.value != "" {
		list, err := parseList("secret")(sec.value)
		if err != nil {
			return usageError{fmt.Errorf("%s: %w", sec.where(), err)}
		}
		base.Gossip.Secrets = list.([]string)
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
	fmt.Fprintf(stdout, "macula doctor %s: gossip %s, mesh %s\n\n", version(),
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
	d.checkSecret(sec, gcfg.Secrets)
	d.checkCookie(ck)
	if valid && gaddr.Is4() && len(chosen) > 0 && listenDur > 0 {
		var names []string
		for _, ifi := range chosen {
			names = append(names, ifi.Name)
		}
		where := strings.Join(names, ",")
		fmt.Fprintf(stdout, "\nlistening %v on %s for heartbeats...\n", listenDur, where)
		heard, err := d.listen(ctx, chosen, gaddr, gport, gcfg.Secrets, listenDur)
		if err != nil {
			d.report(statusFail, "listen on "+where, err.Error(), "see the port and send/receive checks above")
		} else {
			good := d.reportHeard(heard, gcfg.Secrets, sec.fix, listenDur, where)
			if ck.value != "" {
				d.probeCookies(ctx, good, ck.value, ck.fix)
			} else if len(good) > 0 {
				d.report(statusWarn, "mesh cookie of the nodes heard", "not checked: this host has no cookie",
					"give this host the cluster's cookie and run again: macula doctor --cookie-file ~/.macula.cookie")
			}
		}
	}

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
		fix := "macula doctor (without --interface: every up, multicast-capable interface)"
		if len(ifs) > 0 {
			fix = "macula doctor --interface " + ifs[0].Name + "  (or another name of the list above)"
		}
		d.report(statusFail, "interfaces", b.String()+fmt.Sprintf("interface %q does not exist", missing[0]), fix)
		return chosen
	}
	switch {
	case len(chosen) == 0 && len(want.Names) > 0:
		d.report(statusFail, "interfaces", b.String()+"the named interfaces are down", "ip link set "+strings.Join(want.Names, " up && ip link set ")+" up")
	case len(chosen) == 0:
		d.report(statusFail, "interfaces", b.String()+"no up, running, multicast-capable, non-loopback interface with an IPv4 address",
			"macula doctor --interface lo  (a single-host cluster; for several hosts connect a network first)")
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
		d.report(statusOK, "multicast route", "no 224.0.0.0/4 route (multicast follows the default route via "+defaultVia+"); gossip picks the interface per packet, so the send/receive test below is what counts", "")
	default:
		d.report(statusOK, "multicast route", "no route covers "+group.String()+"; gossip picks the interface per packet, so the send/receive test below is what counts", "")
	}
}

// checkUDPPort binds the gossip port as gossip does (package mcast).
func (d *doctor) checkUDPPort(group netip.Addr, port int) {
	c, err := mcast.Listen(context.Background(), mcast.Config{Group: group, Port: port})
	if err != nil {
		d.report(statusFail, fmt.Sprintf("gossip port %d/udp", port), err.Error(),
			fmt.Sprintf("find the program that holds it without SO_REUSEADDR: ss -ulpn 'sport = :%d' (or give every node another port: macula run --port %d)", port, port+1))
		return
	}
	c.Close()
	d.report(statusOK, fmt.Sprintf("gossip port %d/udp", port), "can be bound (shared with other macula nodes on this host)", "")
}

func (d *doctor) checkMeshPorts(listen string) {
	if listen != "" {
		ln, err := net.Listen("tcp", listen)
		if err != nil {
			d.report(statusFail, "mesh listen "+listen, err.Error(), "macula run --listen "+nextPort(listen)+"  (or stop what holds the port: ss -tlpn 'sport = :"+portOf(listen)+"')")
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
			"macula run --listen :0  (any free port; or stop other nodes: ss -tlpn 'sport >= :9100 and sport <= :9200')")
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
		d.report(statusFail, title, "join group: "+err.Error(), "ip link set "+ifi.Name+" multicast on")
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
			d.report(statusFail, title, "send: "+err.Error(), "ip link set "+ifi.Name+" up multicast on && ip route replace 224.0.0.0/4 dev "+ifi.Name)
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
	d.report(statusFail, title, "sent 3 probes, none came back within 2s: a firewall drops multicast, or the interface does not deliver it",
		fmt.Sprintf("iptables -I INPUT -i %s -p udp -d %s --dport %d -j ACCEPT  (nftables: nft insert rule inet filter input iifname %s ip daddr %s udp dport %d accept)",
			ifi.Name, group, port, ifi.Name, group, port))
}

func (d *doctor) checkSecret(sec doctorSecret, secrets []string) {
	if len(secrets) == 0 {
		d.report(statusWarn, "gossip secret", "none: heartbeats are unsigned and any host on the LAN can announce nodes",
			"(umask 077; openssl rand -hex 32 > ~/.macula.secret), copy the file to every node, and run them with --secret-file ~/.macula.secret")
		return
	}
	d.report(statusOK, "gossip secret", fmt.Sprintf("%d key(s) from %s; heartbeats are signed with HMAC-SHA256", len(secrets), sec.where()), "")
}

func (d *doctor) checkCookie(ck doctorSecret) {
	if ck.value != "" && ck.file != "" && ck.display == "~/.macula.cookie" {
		// the default file: checked below, with its mode
	} else if ck.value != "" {
		d.report(statusOK, "mesh cookie", "from "+ck.where(), "")
		return
	}
	home, err := os.UserHomeDir()
	if err != nil {
		d.report(statusFail, "mesh cookie", "no MACULA_COOKIE/RELEASE_COOKIE and no home directory: "+err.Error(),
			"(umask 077; openssl rand -hex 32 > macula.cookie), copy the file to every node, and run them with --cookie-file macula.cookie")
		return
	}
	path := filepath.Join(home, ".macula.cookie")
	st, err := os.Stat(path)
	switch {
	case errors.Is(err, os.ErrNotExist):
		d.report(statusWarn, "mesh cookie", path+" does not exist yet: the first node creates a random one, so nodes on other hosts will not share it",
			"(umask 077; openssl rand -hex 32 > ~/.macula.cookie), then copy ~/.macula.cookie to every node")
	case err != nil:
		d.report(statusFail, "mesh cookie", err.Error(), "chmod 600 "+path+" && chown \"$(id -u)\" "+path)
	case st.Mode().Perm()&0o077 != 0:
		d.report(statusWarn, "mesh cookie", fmt.Sprintf("from %s, but its mode is %v: other users can read it", path, st.Mode().Perm()), "chmod 600 "+path)
	default:
		d.report(statusOK, "mesh cookie", "from "+path, "")
	}
}

// doctorSecret is a secret as the doctor found it, and how to give it to
// another host (a fix that can be pasted).
type doctorSecret struct {
	value   string
	file    string // the file it came from, if any
	env     string // the variable it came from, if any
	flag    string // the flag it came from, if any
	display string // file as shown
	fix     string // "..." to give it to the node at a host: see fixFor
}

func (s doctorSecret) where() string {
	switch {
	case s.flag != "":
		return "--" + s.flag
	case s.env != "":
		return s.env
	case s.display != "":
		return s.display
	}
	return s.file
}

// resolveDoctorSecret finds a secret as `macula run` does: flag, file
// flag, variable, file variable, then the fallback variable.
func resolveDoctorSecret(src secretSource, set map[string]bool, value, file, fallbackEnv string, getenv func(string) string) (doctorSecret, error) {
	v, err := src.resolve(set, file, getenv)
	if err != nil {
		return doctorSecret{}, err
	}
	var s doctorSecret
	switch {
	case v != "" && set[src.fileFlag]:
		s = doctorSecret{value: v, file: file}
	case v != "":
		s = doctorSecret{value: v, file: getenv(src.fileEnv), env: src.fileEnv}
	case set[src.flag]:
		s = doctorSecret{value: value, flag: src.flag}
	case getenv(src.env) != "":
		s = doctorSecret{value: getenv(src.env), env: src.env}
	case getenv(fallbackEnv) != "":
		s = doctorSecret{value: getenv(fallbackEnv), env: fallbackEnv}
	}
	s.fix = s.fixFor(src)
	return s, nil
}

// fixFor is the pasteable way to hand the secret to another host.
func (s doctorSecret) fixFor(src secretSource) string {
	switch {
	case s.value == "":
		if src.flag == "secret" {
			return "scp {host}:.macula.secret ~/.macula.secret && macula doctor --secret-file ~/.macula.secret"
		}
		return "scp {host}:.macula.cookie ~/.macula.cookie && macula doctor"
	case s.file != "":
		return "scp " + s.file + " {host}:" + s.file + " && ssh {host} macula run --" + src.fileFlag + " " + s.file + "  (restart the node there)"
	case s.env != "":
		return "ssh {host} \"" + s.env + "='$" + s.env + "' macula run\"  (restart the node there)"
	}
	return "ssh {host} macula run --" + s.flag + " " + strconv.Quote(s.value) + "  (restart the node there)"
}

func nextPort(listen string) string {
	host, port, err := net.SplitHostPort(listen)
	if err != nil {
		return ":0"
	}
	p, _ := strconv.Atoi(port)
	return net.JoinHostPort(host, strconv.Itoa(min(p+1, 65535)))
}

func portOf(listen string) string {
	_, port, _ := net.SplitHostPort(listen)
	return port
}
