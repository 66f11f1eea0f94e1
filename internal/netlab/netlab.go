//go:build linux

package netlab

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"os"
	"os/exec"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// MaxHosts bounds Options.Hosts: host i gets the addresses .(i+10), so the
// last octet stays below 251.
const MaxHosts = 240

// Prefix starts the name of every namespace this package makes:
// "mlab-<pid>-<4 hex>-sw" and "mlab-<pid>-<4 hex>-h<i>".
const Prefix = "mlab-"

// Errors for errors.Is.
var (
	// ErrClosed is returned by methods called after Lab.Close.
	ErrClosed = errors.New("netlab: lab closed")
	// ErrNetemUnsupported is returned by Host.Netem when the kernel has no
	// netem qdisc (CONFIG_NET_SCH_NETEM); it wraps errors.ErrUnsupported.
	ErrNetemUnsupported = fmt.Errorf("netlab: kernel has no netem qdisc (CONFIG_NET_SCH_NETEM): %w", errors.ErrUnsupported)
	// ErrExited is returned by Proc.WaitFor when the process exited (and its
	// output was read to the end) without a matching line.
	ErrExited = errors.New("netlab: process exited")
)

// runDir is where iproute2 keeps named namespaces (NETNS_RUN_DIR).
const runDir = "/run/netns"

// cmdTimeout bounds every ip/tc/nft command the lab runs.
const cmdTimeout = 30 * time.Second

// Options configures a lab. The zero value gives two hosts.
type Options struct {
	// Hosts is the number of hosts (0 = 2, at most MaxHosts).
	Hosts int
	// Name labels the lab in error messages and logs ("" = the test name
	// for New, "lab" for NewLab). It does not appear in namespace names.
	Name string
	// Impair links each host to the switch by two TAP devices and a
	// forwarder in this process instead of a veth pair, so that
	// Host.Impair (and Host.Netem) can add loss and delay without kernel
	// netem (false = veth pairs). See the package documentation for the
	// costs.
	Impair bool
}

// Lab is a set of hosts on one virtual switch. Create it with New (tests) or
// NewLab (anything else), and Close it. Its methods are safe for concurrent
// use.
type Lab struct {
	// Hosts are the lab's hosts; Hosts[i].Index == i.
	Hosts []*Host
	// ID is the unique run id, "mlab-<pid>-<4 hex>"; every namespace of the
	// lab is named ID + "-sw" or ID + "-h<i>".
	ID string
	// Name is Options.Name (or its default).
	Name string

	sw     string // switch namespace
	impair bool   // Options.Impair: hosts linked by TAPs and forwarders

	mu        sync.Mutex
	closed    bool
	procs     []*Proc
	bridges   int  // extra bridges br1..brN made by Partition (without nft)
	cut       bool // Partition's nft table is in the switch namespace
	nftFailed bool // nft refused the table once: Partition moves ports
	closeErr  error
	once      sync.Once
}

// Host is one network namespace with one interface, Iface ("eth0"), on the
// lab's switch.
type Host struct {
	// Index is the host's position in Lab.Hosts.
	Index int
	// NS is the namespace name (for "ip netns exec NS ...").
	NS string
	// IP is 198.18.0.(Index+10).
	IP netip.Addr
	// IP6 is fdca:1ab::(Index+10), the number written in decimal digits
	// (host 0 is fdca:1ab::10, like 198.18.0.10).
	IP6 netip.Addr
	// Iface is the host's interface name inside NS: "eth0".
	Iface string

	lab  *Lab
	port string     // switch-side veth ("vh<i>") or TAP ("t<i>") in the switch namespace
	fwd  *forwarder // Impair labs only
}

func (h *Host) String() string { return h.NS }

// New makes a lab for a test: it calls Require (skip without root and
// iproute2, fail when CI=true; with Options.Impair also ImpairSupported),
// builds the lab (t.Fatal on error) and
// registers Close with t.Cleanup. When the test failed, the cleanup logs the
// stderr tail and last lines of every process started in the lab.
func New(t TB, opts Options) *Lab {
	t.Helper()
	Require(t)
	if opts.Impair {
		if err := ImpairSupported(); err != nil {
			requireFail(t, err)
		}
	}
	if opts.Name == "" {
		opts.Name = t.Name()
	}
	l, err := NewLab(opts)
	if err != nil {
		t.Fatalf("netlab.New: %v", err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			l.logProcs(t)
		}
		if err := l.Close(); err != nil {
			t.Errorf("netlab: close %s: %v", l.ID, err)
		}
	})
	return l
}

// NewLab makes a lab without a TB, for the bench command. The caller
// must Close it, also on SIGINT/SIGTERM (the package installs no signal
// handler). If the process dies without Close, the namespaces stay until the
// next New or NewLab on the machine removes them (their pid is dead);
// processes started by Host.Start die with the caller (SIGKILL on parent
// death).
func NewLab(opts Options) (*Lab, error) {
	if opts.Hosts == 0 {
		opts.Hosts = 2
	}
	if opts.Hosts < 0 || opts.Hosts > MaxHosts {
		return nil, fmt.Errorf("netlab: %d hosts: want 1..%d", opts.Hosts, MaxHosts)
	}
	if opts.Name == "" {
		opts.Name = "lab"
	}
	if os.Geteuid() != 0 {
		return nil, errors.New("netlab: network namespaces need root")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		return nil, fmt.Errorf("netlab: iproute2 missing: %w", err)
	}
	CleanStale()

	id, err := newID()
	if err != nil {
		return nil, err
	}
	l := &Lab{ID: id, Name: opts.Name, sw: id + "-sw", impair: opts.Impair}
	for i := range opts.Hosts {
		a := i + 10
		port := fmt.Sprintf("vh%d", i)
		if opts.Impair {
			port = fmt.Sprintf("t%d", i)
		}
		l.Hosts = append(l.Hosts, &Host{
			Index: i,
			NS:    fmt.Sprintf("%s-h%d", id, i),
			IP:    netip.AddrFrom4([4]byte{198, 18, 0, byte(a)}),
			IP6:   netip.MustParseAddr("fdca:1ab::" + strconv.Itoa(a)),
			Iface: "eth0",
			lab:   l,
			port:  port,
		})
	}
	if err := l.build(); err != nil {
		if cerr := l.Close(); cerr != nil {
			err = errors.Join(err, cerr)
		}
		return nil, fmt.Errorf("netlab: make %s (%s, %d hosts): %w", l.ID, l.Name, opts.Hosts, err)
	}
	return l, nil
}

// build creates the namespaces, the switch and the hosts' interfaces.
func (l *Lab) build() error {
	ctx := context.Background()
	// 1. The namespaces (nothing else happens in the root namespace).
	var b strings.Builder
	fmt.Fprintf(&b, "netns add %s\n", l.sw)
	for _, h := range l.Hosts {
		fmt.Fprintf(&b, "netns add %s\n", h.NS)
	}
	if err := run(ctx, b.String(), "ip", "-batch", "-"); err != nil {
		return err
	}
	// 2. Sysctls, before any interface exists: the switch does no IPv6 of its
	// own (it only bridges); hosts skip duplicate address detection so their
	// link-local address is usable at once.
	if err := setSysctls(l.sw, "net.ipv6.conf.all.disable_ipv6", "1", "net.ipv6.conf.default.disable_ipv6", "1"); err != nil {
		return err
	}
	for _, h := range l.Hosts {
		if err := setSysctls(h.NS,
			"net.ipv6.conf.all.accept_dad", "0", "net.ipv6.conf.default.accept_dad", "0",
			"net.ipv6.conf.all.dad_transmits", "0", "net.ipv6.conf.default.dad_transmits", "0",
		); err != nil {
			return err
		}
	}
	// 3. The switch: br0 without IGMP/MLD snooping (multicast floods), and one
	// veth pair per host, made inside the switch namespace with the peer
	// placed directly in the host namespace as eth0. Impair labs: two TAPs
	// per host instead, made by this process from inside each namespace,
	// and a forwarder between them.
	if l.impair {
		for _, h := range l.Hosts {
			if err := h.makeForwarder(); err != nil {
				return err
			}
		}
	}
	b.Reset()
	b.WriteString("link set lo up\n")
	b.WriteString("link add name br0 type bridge mcast_snooping 0 stp_state 0\n")
	b.WriteString("link set br0 up\n")
	for _, h := range l.Hosts {
		if l.impair {
			fmt.Fprintf(&b, "link set %s txqueuelen %d\n", h.port, tapQueueLen)
		} else {
			fmt.Fprintf(&b, "link add name %s type veth peer name eth0 netns %s\n", h.port, h.NS)
		}
		fmt.Fprintf(&b, "link set %s master br0\n", h.port)
		fmt.Fprintf(&b, "link set %s up\n", h.port)
	}
	if err := run(ctx, b.String(), "ip", "-n", l.sw, "-batch", "-"); err != nil {
		return err
	}
	// 4. Each host: lo and eth0 up, addresses, the multicast route.
	sem := make(chan struct{}, 4)
	errs := make([]error, len(l.Hosts))
	var wg sync.WaitGroup
	for i, h := range l.Hosts {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			script := ""
			if l.impair {
				script = fmt.Sprintf("link set eth0 txqueuelen %d\n", tapQueueLen)
			}
			script += fmt.Sprintf("link set lo up\n"+
				"link set eth0 multicast on\n"+
				"addr add %s/16 brd + dev eth0\n"+
				"addr add %s/64 dev eth0 nodad\n"+
				"link set eth0 up\n"+
				"route add 224.0.0.0/4 dev eth0\n", h.IP, h.IP6)
			errs[i] = run(ctx, script, "ip", "-n", h.NS, "-batch", "-")
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

// SwitchNS is the name of the switch namespace (bridge br0 and the
// switch-side veths "vh<i>", or TAPs "t<i>" in an Impair lab).
func (l *Lab) SwitchNS() string { return l.sw }

// namespaces lists every namespace of the lab, switch first.
func (l *Lab) namespaces() []string {
	ns := []string{l.sw}
	for _, h := range l.Hosts {
		ns = append(ns, h.NS)
	}
	return ns
}

func (l *Lab) addProc(p *Proc) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return ErrClosed
	}
	l.procs = append(l.procs, p)
	return nil
}

func (l *Lab) isClosed() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.closed
}

// Partition splits the hosts: hosts in different groups cannot reach each
// other, hosts in one group can. Hosts not named in any group form one more
// group together. A second Partition replaces the first. Traffic is dropped
// silently.
//
// With nft (nftables) the cut is one bridge-family table in the switch
// namespace that drops frames between ports of different groups: made,
// replaced and removed (Heal) in one atomic transaction, whatever the
// number of hosts. Without it, each group's ports are moved to a bridge of
// their own, one port at a time (at 100 hosts, under load, that took
// seconds, and a heal measured from its start included them).
func (l *Lab) Partition(groups ...[]int) error {
	target := make([]int, len(l.Hosts)) // group per host; 0 = the hosts named nowhere
	seen := make(map[int]bool)
	for k, g := range groups {
		for _, i := range g {
			if i < 0 || i >= len(l.Hosts) {
				return fmt.Errorf("netlab: partition: host %d out of range 0..%d", i, len(l.Hosts)-1)
			}
			if seen[i] {
				return fmt.Errorf("netlab: partition: host %d in two groups", i)
			}
			seen[i] = true
			target[i] = k + 1
		}
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return ErrClosed
	}
	if l.AtomicCut() {
		ports := make([][]string, len(groups)+1)
		for i, h := range l.Hosts {
			ports[target[i]] = append(ports[target[i]], fmt.Sprintf("%q", h.port))
		}
		var b strings.Builder
		b.WriteString(cutReset)
		for a := range ports {
			for c := range ports {
				if a != c && len(ports[a]) > 0 && len(ports[c]) > 0 {
					fmt.Fprintf(&b, "add rule bridge %s cut iifname { %s } oifname { %s } drop\n", cutTable,
						strings.Join(ports[a], ", "), strings.Join(ports[c], ", "))
				}
			}
		}
		err := run(context.Background(), b.String(), "ip", "netns", "exec", l.sw, "nft", "-f", "-")
		if err == nil {
			l.cut = true
			return nil
		}
		// nft without the kernel's bridge family (nf_tables, a module
		// that may be missing): this lab moves ports instead.
		l.nftFailed = true
	}
	var b strings.Builder
	for k := l.bridges + 1; k <= len(groups); k++ {
		fmt.Fprintf(&b, "link add name br%d type bridge mcast_snooping 0 stp_state 0\nlink set br%d up\n", k, k)
	}
	for i, h := range l.Hosts {
		fmt.Fprintf(&b, "link set %s master br%d\n", h.port, target[i])
	}
	if err := run(context.Background(), b.String(), "ip", "-n", l.sw, "-batch", "-"); err != nil {
		return fmt.Errorf("netlab: partition %s: %w", l.ID, err)
	}
	l.bridges = max(l.bridges, len(groups))
	return nil
}

// AtomicCut reports whether Partition and Heal switch every host at one
// instant (one nft transaction) somewhere between their call and their
// return; at an idle moment about 10 ms after the call, while the return
// can come much later when the change itself loads the machine (a heal of
// 100 hosts: up to 1.4 s). Without nft the hosts are moved one by one
// between the call and its return.
func (l *Lab) AtomicCut() bool {
	_, err := exec.LookPath("nft")
	return err == nil && !noNFT && !l.nftFailed
}

// noNFT makes Partition use the bridge fallback (tests).
var noNFT bool

// cutTable is the nft table of Partition in the switch namespace; cutReset
// declares it with its one chain (hooked on the bridge's forward path) and
// empties the chain, in the same transaction as what follows. The table
// and its hook stay until the lab is closed: Heal only flushes the chain
// (a cut of 100 hosts took 5-6 ms this way, 14-20 ms when it deleted and
// re-made the table).
const (
	cutTable = "mlabcut"
	cutReset = "table bridge " + cutTable + " {\n  chain cut {\n    type filter hook forward priority 0; policy accept;\n  }\n}\n" +
		"flush chain bridge " + cutTable + " cut\n"
)

// Heal undoes Partition: every host reaches every other again, at once.
func (l *Lab) Heal() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return ErrClosed
	}
	if l.cut {
		if err := run(context.Background(), cutReset, "ip", "netns", "exec", l.sw, "nft", "-f", "-"); err != nil {
			return fmt.Errorf("netlab: heal %s: %w", l.ID, err)
		}
		l.cut = false
	}
	if l.bridges == 0 {
		return nil
	}
	var b strings.Builder
	for _, h := range l.Hosts {
		fmt.Fprintf(&b, "link set %s master br0\n", h.port)
	}
	for k := 1; k <= l.bridges; k++ {
		fmt.Fprintf(&b, "link del br%d\n", k)
	}
	if err := run(context.Background(), b.String(), "ip", "-n", l.sw, "-batch", "-"); err != nil {
		return fmt.Errorf("netlab: heal %s: %w", l.ID, err)
	}
	l.bridges = 0
	return nil
}

// Close kills every process started in the lab (and any other process still
// inside its namespaces) and deletes the namespaces, which removes the veths
// and bridges with them. It is idempotent; later calls return the first
// result.
func (l *Lab) Close() error {
	l.once.Do(func() {
		l.mu.Lock()
		l.closed = true
		procs := l.procs
		l.mu.Unlock()
		for _, p := range procs {
			p.killGroup()
		}
		for _, p := range procs {
			p.waitBounded(10 * time.Second)
		}
		var errs []error
		// Impair labs: closing the TAPs stops the forwarders and removes the
		// devices.
		for _, h := range l.Hosts {
			if h.fwd != nil {
				if err := h.fwd.close(); err != nil {
					errs = append(errs, fmt.Errorf("%s: close forwarder: %w", h.NS, err))
				}
			}
		}
		var existing []string
		for _, ns := range l.namespaces() {
			if _, err := os.Stat(runDir + "/" + ns); err == nil {
				existing = append(existing, ns)
			}
		}
		killNamespacePids(existing)
		if err := deleteNamespaces(existing); err != nil {
			errs = append(errs, err)
		}
		l.closeErr = errors.Join(errs...)
	})
	return l.closeErr
}

// logProcs logs what every process of the lab left behind (for failed
// tests).
func (l *Lab) logProcs(t TB) {
	t.Helper()
	l.mu.Lock()
	procs := l.procs
	l.mu.Unlock()
	for _, p := range procs {
		lines := p.Events()
		if len(lines) > 20 {
			lines = lines[len(lines)-20:]
		}
		var out strings.Builder
		for _, ln := range lines {
			fmt.Fprintf(&out, "  %s %s\n", ln.At.Format("15:04:05.000"), ln.Raw)
		}
		stderr := p.Stderr()
		if len(stderr) > 4096 {
			stderr = "..." + stderr[len(stderr)-4096:]
		}
		t.Logf("netlab: %s: last stdout lines:\n%sstderr tail:\n%s", p, out.String(), stderr)
	}
}

// newID returns a run id not used by any existing namespace.
// idSeq makes the run ids of one process distinct (labs built concurrently
// by parallel tests once drew the same random id; issue 15's notes).
var idSeq = struct {
	sync.Mutex
	next uint32
	init bool
}{}

func newID() (string, error) {
	existing, _ := listNamespaces()
	for range 100 {
		idSeq.Lock()
		if !idSeq.init {
			idSeq.next, idSeq.init = uint32(rand.N(1<<16)), true
		}
		n := idSeq.next & 0xffff
		idSeq.next++
		idSeq.Unlock()
		id := fmt.Sprintf("%s%d-%04x", Prefix, os.Getpid(), n)
		used := false
		for _, ns := range existing {
			if strings.HasPrefix(ns, id+"-") {
				used = true
				break
			}
		}
		if !used {
			return id, nil
		}
	}
	return "", errors.New("netlab: no free run id")
}

// listNamespaces returns the names of every named namespace.
func listNamespaces() ([]string, error) {
	ents, err := os.ReadDir(runDir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	names := make([]string, 0, len(ents))
	for _, e := range ents {
		names = append(names, e.Name())
	}
	return names, nil
}

var staleRe = regexp.MustCompile(`^mlab-([0-9]+)-[0-9a-f]{4}-`)

// CleanStale removes namespaces of labs whose process is gone, that is
// namespaces named "mlab-<pid>-<4 hex>-..." where no process <pid> exists,
// after killing any process still inside them, and build directories of
// BuildMacula left by dead processes. New and NewLab call it; errors are
// ignored (best effort).
func CleanStale() {
	names, _ := listNamespaces()
	var stale []string
	for _, ns := range names {
		m := staleRe.FindStringSubmatch(ns)
		if m == nil {
			continue
		}
		pid, err := strconv.Atoi(m[1])
		if err != nil || pidAlive(pid) {
			continue
		}
		stale = append(stale, ns)
	}
	if len(stale) > 0 {
		killNamespacePids(stale)
		_ = deleteNamespaces(stale)
	}
	cleanStaleBuilds()
}

// pidAlive reports whether a process with this pid exists.
func pidAlive(pid int) bool {
	if pid <= 0 {
		return false
	}
	if pid == os.Getpid() {
		return true
	}
	err := syscall.Kill(pid, 0)
	return err == nil || errors.Is(err, syscall.EPERM)
}

// killNamespacePids SIGKILLs every process inside the namespaces and waits
// (bounded) until they are gone.
func killNamespacePids(nss []string) {
	for range 50 {
		pids := namespacePids(nss)
		if len(pids) == 0 {
			return
		}
		for _, pid := range pids {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
		// A killed process leaves its namespace when it exits; give it a
		// moment and look again.
		time.Sleep(20 * time.Millisecond)
	}
}

// namespacePids returns the processes inside the namespaces (what "ip netns
// pids" does, in one pass over /proc for all of them), never this process.
func namespacePids(nss []string) []int {
	type key struct{ dev, ino uint64 }
	want := make(map[key]bool)
	for _, ns := range nss {
		var st syscall.Stat_t
		if syscall.Stat(runDir+"/"+ns, &st) == nil {
			want[key{st.Dev, st.Ino}] = true
		}
	}
	if len(want) == 0 {
		return nil
	}
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var pids []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		var st syscall.Stat_t
		if syscall.Stat("/proc/"+e.Name()+"/ns/net", &st) != nil {
			continue
		}
		if want[key{st.Dev, st.Ino}] {
			pids = append(pids, pid)
		}
	}
	return pids
}

// deleteNamespaces deletes named namespaces in one ip process.
func deleteNamespaces(nss []string) error {
	if len(nss) == 0 {
		return nil
	}
	var b strings.Builder
	for _, ns := range nss {
		fmt.Fprintf(&b, "netns del %s\n", ns)
	}
	return run(context.Background(), b.String(), "ip", "-force", "-batch", "-")
}

// run runs a command with stdin (if not empty) and returns an error that
// includes its output.
func run(ctx context.Context, stdin string, name string, args ...string) error {
	ctx, cancel := context.WithTimeout(ctx, cmdTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	if stdin != "" {
		cmd.Stdin = strings.NewReader(stdin)
	}
	var out bytes.Buffer
	cmd.Stdout = &out
	cmd.Stderr = &out
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, bytes.TrimSpace(out.Bytes()))
	}
	return nil
}

// output runs a command and returns its stdout.
func output(ctx context.Context, name string, args ...string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, cmdTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, bytes.TrimSpace(stderr.Bytes()))
	}
	return out, nil
}

// setSysctls writes sysctls (name, value pairs) inside a namespace.
func setSysctls(ns string, kv ...string) error {
	return InNetns(ns, func() error {
		var werr error
		for i := 0; i+1 < len(kv); i += 2 {
			path := "/proc/sys/" + strings.ReplaceAll(kv[i], ".", "/")
			if err := os.WriteFile(path, []byte(kv[i+1]), 0o644); err != nil {
				werr = errors.Join(werr, fmt.Errorf("sysctl %s=%s in %s: %w", kv[i], kv[i+1], ns, err))
			}
		}
		return werr
	})
}

// InNetns runs fn on a locked OS thread that has entered the named network
// namespace ns, then leaves the namespace again. If leaving fails, the
// thread stays locked and dies with its goroutine, so no other goroutine
// ever runs in ns by accident. Files and sockets fn opens stay in ns for
// their whole life, whatever thread uses them later: this is how a test
// gets a socket inside a host (for example Host.NS) without a process.
func InNetns(ns string, fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := os.Open("/proc/thread-self/ns/net")
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("enter %s: %w", ns, err)
			return
		}
		defer orig.Close()
		target, err := os.Open(runDir + "/" + ns)
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("enter %s: %w", ns, err)
			return
		}
		defer target.Close()
		if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("enter %s: setns: %w", ns, err)
			return
		}
		ferr := fn()
		if err := unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET); err != nil {
			// Keep the thread locked: it must not run other goroutines.
			errc <- errors.Join(ferr, fmt.Errorf("leave %s: setns back: %w", ns, err))
			return
		}
		runtime.UnlockOSThread()
		errc <- ferr
	}()
	return <-errc
}
