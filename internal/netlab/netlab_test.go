//go:build linux

package netlab

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	if os.Getenv(helperEnv) == "1" {
		os.Exit(runHelper(os.Args[1:]))
	}
	goleak.VerifyTestMain(m, goleak.Cleanup(func(code int) {
		Cleanup()
		if code == 0 {
			if left := ourNamespaces(); len(left) > 0 {
				fmt.Fprintf(os.Stderr, "netlab: namespaces left behind: %v\n", left)
				code = 1
			}
		}
		os.Exit(code)
	}))
}

// ourNamespaces lists namespaces made by this process.
func ourNamespaces() []string {
	names, _ := listNamespaces()
	var ours []string
	for _, ns := range names {
		if strings.HasPrefix(ns, fmt.Sprintf("%s%d-", Prefix, os.Getpid())) {
			ours = append(ours, ns)
		}
	}
	return ours
}

func testExe(t testing.TB) string {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	return exe
}

// helperCmd runs the test binary in a helper mode inside h.
func helperCmd(ctx context.Context, t testing.TB, h *Host, args ...string) *exec.Cmd {
	cmd := h.Command(ctx, testExe(t), args...)
	cmd.Env = append(os.Environ(), helperEnv+"=1", helperRace)
	return cmd
}

// helperRace stops a -race helper from sleeping 1 s at exit.
const helperRace = "GORACE=atexit_sleep_ms=0"

// ping reports whether h gets an ICMP echo reply from dst within timeout.
func ping(t testing.TB, h *Host, dst netip.Addr, timeout time.Duration) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout+10*time.Second)
	defer cancel()
	out, err := helperCmd(ctx, t, h, "ping", dst.String(), timeout.String()).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s -> %s: %w: %s", h, dst, err, strings.TrimSpace(string(out)))
	}
	return nil
}

func mustPing(t testing.TB, h *Host, dst netip.Addr) {
	t.Helper()
	if err := ping(t, h, dst, 5*time.Second); err != nil {
		t.Fatalf("ping: %v", err)
	}
}

func mustNotPing(t testing.TB, h *Host, dst netip.Addr) {
	t.Helper()
	if err := ping(t, h, dst, time.Second); err == nil {
		t.Fatalf("ping %s -> %s: got a reply, want none", h, dst)
	}
}

func helperStart(t testing.TB, h *Host, args ...string) *Proc {
	t.Helper()
	p, err := h.Start(context.Background(), []string{helperEnv + "=1", helperRace}, testExe(t), args...)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func waitEvent(t testing.TB, p *Proc, event string) Line {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	l, err := p.WaitFor(ctx, func(l Line) bool { return l.Event() == event })
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func TestAddressing(t *testing.T) {
	t.Parallel()
	l := New(t, Options{Hosts: 3})
	if len(l.Hosts) != 3 {
		t.Fatalf("got %d hosts", len(l.Hosts))
	}
	for i, h := range l.Hosts {
		if h.Index != i || h.Iface != "eth0" || !strings.HasPrefix(h.NS, l.ID+"-h") {
			t.Errorf("host %d: %+v", i, h)
		}
		if want := netip.AddrFrom4([4]byte{198, 18, 0, byte(10 + i)}); h.IP != want {
			t.Errorf("host %d: IP %s, want %s", i, h.IP, want)
		}
		if want := netip.MustParseAddr(fmt.Sprintf("fdca:1ab::%d", 10+i)); h.IP6 != want {
			t.Errorf("host %d: IP6 %s, want %s", i, h.IP6, want)
		}
	}
	h := l.Hosts[1]
	out, err := h.Command(t.Context(), "ip", "-br", "addr", "show", "dev", "eth0").CombinedOutput()
	if err != nil {
		t.Fatal(err, string(out))
	}
	for _, want := range []string{"198.18.0.11/16", "fdca:1ab::11/64", "fe80::", "UP"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("eth0 in %s: %q lacks %q", h, out, want)
		}
	}
	out, err = h.Command(t.Context(), "ip", "route", "show", "224.0.0.0/4").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "dev eth0") {
		t.Errorf("multicast route in %s: %q %v", h, out, err)
	}
	checkRootNamespace(t)
	out, err = exec.Command("ip", "-n", l.SwitchNS(), "-d", "link", "show", "br0").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "mcast_snooping 0") {
		t.Errorf("br0: %q %v", out, err)
	}
}

// ourLinkRe matches the names of the interfaces a lab makes outside the
// hosts (not "br-<hex>" of docker networks, say).
var ourLinkRe = regexp.MustCompile(`^(vh|t|br)[0-9]+(@|$)`)

// checkRootNamespace fails when the root namespace has an interface named
// like ours.
func checkRootNamespace(t *testing.T) {
	t.Helper()
	out, err := exec.Command("ip", "-br", "link").CombinedOutput()
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(out), "\n") {
		if f := strings.Fields(line); len(f) > 0 && ourLinkRe.MatchString(f[0]) {
			t.Errorf("root namespace has %q", line)
		}
	}
}

func TestPing(t *testing.T) {
	t.Parallel()
	l := New(t, Options{Hosts: 3})
	h := l.Hosts
	pairs := [][2]int{{0, 1}, {0, 2}, {2, 0}, {1, 2}}
	var wg sync.WaitGroup
	for _, p := range pairs {
		for _, v6 := range []bool{false, true} {
			wg.Go(func() {
				dst := h[p[1]].IP
				if v6 {
					dst = h[p[1]].IP6
				}
				if err := ping(t, h[p[0]], dst, 5*time.Second); err != nil {
					t.Error(err)
				}
			})
		}
	}
	wg.Wait()
}

func TestMulticast(t *testing.T) {
	t.Parallel()
	l := New(t, Options{Hosts: 3})
	testMulticast(t, l, "230.1.1.251", "ff02::4d41", "198.18.255.255")
}

// testMulticast sends to each group (or broadcast address) from host 0 and
// checks that hosts 1 and 2 receive.
func testMulticast(t *testing.T, l *Lab, groups ...string) {
	for _, group := range groups {
		t.Run(group, func(t *testing.T) {
			recv := []*Proc{
				helperStart(t, l.Hosts[1], "mcast-recv", group, "45892", "15s"),
				helperStart(t, l.Hosts[2], "mcast-recv", group, "45892", "15s"),
			}
			for _, r := range recv {
				waitEvent(t, r, "ready")
			}
			send := helperStart(t, l.Hosts[0], "mcast-send", group, "45892", "100")
			for _, r := range recv {
				got := waitEvent(t, r, "got")
				from := l.Hosts[0].IP.String()
				if strings.Contains(group, ":") {
					from = "[fe80::" // link-local source for a link-local group
				}
				if !strings.HasPrefix(got.Str("from"), from) || !strings.HasPrefix(got.Str("data"), "hello") {
					t.Errorf("%s got %s, want a packet from %s", r, got, from)
				}
				if err := r.Wait(); err != nil {
					t.Errorf("%s: %v: %s", r, err, r.Stderr())
				}
			}
			_ = send.Kill()
		})
	}
}

func TestCutRestore(t *testing.T) {
	t.Parallel()
	l := New(t, Options{Hosts: 2})
	a, b := l.Hosts[0], l.Hosts[1]
	mustPing(t, a, b.IP)
	before, err := b.Counters()
	if err != nil {
		t.Fatal(err)
	}
	if before.RxPackets == 0 || before.TxPackets == 0 || before.RxBytes == 0 {
		t.Errorf("counters after a ping: %+v", before)
	}
	if err := b.Cut(); err != nil {
		t.Fatal(err)
	}
	mustNotPing(t, a, b.IP)
	mustNotPing(t, b, a.IP6)
	if err := b.Restore(); err != nil {
		t.Fatal(err)
	}
	mustPing(t, a, b.IP)
	mustPing(t, b, a.IP6)
	after, err := b.Counters()
	if err != nil {
		t.Fatal(err)
	}
	if after.RxPackets <= before.RxPackets || after.TxBytes <= before.TxBytes {
		t.Errorf("counters did not grow: before %+v after %+v", before, after)
	}
}

func TestPartitionHeal(t *testing.T) {
	t.Parallel()
	testPartitionHeal(t, New(t, Options{Hosts: 4}))
}

// TestPartitionHealBridges: the same without nft (a group per bridge).
// Not parallel: it sets noNFT for the package.
func TestPartitionHealBridges(t *testing.T) {
	noNFT = true
	defer func() { noNFT = false }()
	testPartitionHeal(t, New(t, Options{Hosts: 4}))
}

func testPartitionHeal(t *testing.T, l *Lab) {
	h := l.Hosts
	if err := l.Partition([]int{0}, []int{1, 2}); err != nil { // host 3: a group of its own
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Go(func() { mustPing(t, h[1], h[2].IP) })
	wg.Go(func() { mustPing(t, h[2], h[1].IP6) })
	wg.Go(func() { mustNotPing(t, h[0], h[1].IP) })
	wg.Go(func() { mustNotPing(t, h[3], h[2].IP) })
	wg.Go(func() { mustNotPing(t, h[0], h[3].IP6) })
	wg.Wait()
	// A new partition replaces the old one.
	if err := l.Partition([]int{0, 1}, []int{2, 3}); err != nil {
		t.Fatal(err)
	}
	wg.Go(func() { mustPing(t, h[0], h[1].IP) })
	wg.Go(func() { mustPing(t, h[3], h[2].IP) })
	wg.Go(func() { mustNotPing(t, h[1], h[2].IP) })
	wg.Wait()
	if err := l.Heal(); err != nil {
		t.Fatal(err)
	}
	wg.Go(func() { mustPing(t, h[0], h[1].IP) })
	wg.Go(func() { mustPing(t, h[1], h[2].IP) })
	wg.Go(func() { mustPing(t, h[3], h[0].IP6) })
	wg.Wait()
	out, err := exec.Command("ip", "-n", l.SwitchNS(), "-br", "link", "show", "type", "bridge").CombinedOutput()
	if err != nil || strings.Count(strings.TrimSpace(string(out)), "\n") != 0 {
		t.Errorf("bridges after heal: %q %v", out, err)
	}
	for _, bad := range [][][]int{{{0}, {0}}, {{4}}, {{-1}}} {
		if err := l.Partition(bad...); err == nil {
			t.Errorf("Partition(%v): no error", bad)
		}
	}
}

func TestNetem(t *testing.T) {
	t.Parallel()
	RequireNetem(t)
	l := New(t, Options{Hosts: 2})
	h := l.Hosts[0]
	if err := h.Netem("loss 20% delay 10ms 5ms"); err != nil {
		t.Fatal(err)
	}
	if q, err := h.Qdisc(); err != nil || !strings.Contains(q, "netem") || !strings.Contains(q, "loss 20%") {
		t.Fatalf("qdisc after Netem: %q %v", q, err)
	}
	if err := h.Netem("delay 1ms"); err != nil { // replace
		t.Fatal(err)
	}
	mustPing(t, h, l.Hosts[1].IP)
	if err := h.ClearNetem(); err != nil {
		t.Fatal(err)
	}
	if q, err := h.Qdisc(); err != nil || strings.Contains(q, "netem") {
		t.Fatalf("qdisc after ClearNetem: %q %v", q, err)
	}
	if err := h.ClearNetem(); err != nil {
		t.Fatalf("second ClearNetem: %v", err)
	}
}

func TestNetemUnsupported(t *testing.T) {
	t.Parallel()
	Require(t)
	if err := NetemSupported(); !errors.Is(err, ErrNetemUnsupported) {
		t.Skipf("netem supported here (%v)", err)
	}
	l := New(t, Options{Hosts: 1})
	if err := l.Hosts[0].Netem("delay 1ms"); !errors.Is(err, ErrNetemUnsupported) || !errors.Is(err, errors.ErrUnsupported) {
		t.Fatalf("Netem without kernel support: %v", err)
	}
	if err := l.Hosts[0].ClearNetem(); err != nil {
		t.Fatal(err)
	}
}

func TestLoss(t *testing.T) {
	t.Parallel()
	if _, err := exec.LookPath("nft"); err != nil {
		Require(t)
		requireFail(t, err)
	}
	l := New(t, Options{Hosts: 2})
	a, b := l.Hosts[0], l.Hosts[1]
	if err := b.Loss(100); err != nil {
		t.Fatal(err)
	}
	mustNotPing(t, a, b.IP)
	if err := b.Loss(30); err != nil { // replaces
		t.Fatal(err)
	}
	if err := b.Loss(0); err != nil {
		t.Fatal(err)
	}
	if err := b.Loss(0); err != nil {
		t.Fatalf("second Loss(0): %v", err)
	}
	mustPing(t, a, b.IP)
	if err := b.Loss(101); err == nil {
		t.Error("Loss(101): no error")
	}
}

func TestProc(t *testing.T) {
	t.Parallel()
	l := New(t, Options{Hosts: 1})
	h := l.Hosts[0]
	start := time.Now()
	p := helperStart(t, h, "json")
	if p.Pid() <= 0 {
		t.Fatalf("pid %d", p.Pid())
	}
	up := waitEvent(t, p, "nodeup")
	if up.Node() != "b@198.18.0.11:9100" || up.At.Before(start) {
		t.Errorf("nodeup line: %+v", up)
	}
	// Already received lines count.
	ready := waitEvent(t, p, "ready")
	if inc, ok := ready.Uint("incarnation"); !ok || inc != 1234567890123456789 {
		t.Errorf("incarnation: %d %v (%s)", inc, ok, ready.Raw)
	}
	if got := ready.Str("incarnation"); got != "1234567890123456789" {
		t.Errorf("Str(incarnation) = %q", got)
	}
	// The pid is the binary's, inside the namespace.
	if link, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", p.Pid())); err != nil || link != testExe(t) {
		t.Errorf("exe of pid %d: %q %v", p.Pid(), link, err)
	}
	if out, err := exec.Command("ip", "netns", "pids", h.NS).Output(); err != nil || !slices.Contains(strings.Fields(string(out)), fmt.Sprint(p.Pid())) {
		t.Errorf("ip netns pids %s: %q %v, want %d", h.NS, out, err, p.Pid())
	}
	if _, err := p.CPUTime(); err != nil {
		t.Error(err)
	}
	if rss, err := p.MaxRSS(); err != nil || rss == 0 {
		t.Errorf("MaxRSS: %d %v", rss, err)
	}
	if err := p.Stop(); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	ev := p.Events()
	var raw []string
	for i, l := range ev {
		raw = append(raw, string(l.Raw))
		if i > 0 && l.At.Before(ev[i-1].At) {
			t.Errorf("line %d before line %d", i, i-1)
		}
	}
	want := []string{"ready", "not json", "nodeup", "bye"}
	if len(ev) != len(want) {
		t.Fatalf("lines %q", raw)
	}
	for i, w := range want {
		if got := ev[i].Event(); got != w && string(ev[i].Raw) != w {
			t.Errorf("line %d = %q, want %q", i, raw[i], w)
		}
	}
	if ev[1].Fields != nil {
		t.Errorf("non-JSON line has fields %v", ev[1].Fields)
	}
	if !strings.Contains(p.Stderr(), "helper json: starting") {
		t.Errorf("stderr %q", p.Stderr())
	}
	if cpu, err := p.CPUTime(); err != nil || cpu < 0 {
		t.Errorf("CPUTime after exit: %v %v", cpu, err)
	}
	if p.ExitCode() != 0 {
		t.Errorf("exit code %d", p.ExitCode())
	}
	// WaitFor on an exited process with no match.
	_, err := p.WaitFor(t.Context(), func(l Line) bool { return l.Event() == "never" })
	if !errors.Is(err, ErrExited) {
		t.Errorf("WaitFor after exit: %v", err)
	}
	if err := p.Wait(); err != nil {
		t.Errorf("Wait: %v", err)
	}
	if err := p.Stop(); err != nil {
		t.Errorf("second Stop: %v", err)
	}
}

func TestProcWaitForBlocks(t *testing.T) {
	t.Parallel()
	l := New(t, Options{Hosts: 1})
	p := helperStart(t, l.Hosts[0], "json")
	waitEvent(t, p, "nodeup")
	// A line that comes later wakes WaitFor.
	got := make(chan error, 1)
	go func() {
		_, err := p.WaitFor(context.Background(), func(l Line) bool { return l.Event() == "bye" })
		got <- err
	}()
	if err := p.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := <-got; err != nil {
		t.Fatal(err)
	}
	// ctx bounds WaitFor.
	p2 := helperStart(t, l.Hosts[0], "json")
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	if _, err := p2.WaitFor(ctx, func(Line) bool { return false }); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("WaitFor with a short ctx: %v", err)
	}
}

func TestProcStopKills(t *testing.T) {
	old := stopGrace
	stopGrace = 300 * time.Millisecond
	t.Cleanup(func() { stopGrace = old })
	l := New(t, Options{Hosts: 1})
	p := helperStart(t, l.Hosts[0], "stubborn")
	waitEvent(t, p, "ready")
	err := p.Stop()
	if err == nil || !strings.Contains(err.Error(), "killed") {
		t.Errorf("Stop of a process ignoring SIGTERM: %v", err)
	}
	if !strings.Contains(p.Stderr(), "ignoring SIGTERM") {
		t.Errorf("stderr %q", p.Stderr())
	}
	// Kill, and ctx cancellation.
	p2 := helperStart(t, l.Hosts[0], "sleep", "30s")
	waitEvent(t, p2, "ready")
	if err := p2.Kill(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	p3, err := l.Hosts[0].Start(ctx, []string{helperEnv + "=1", helperRace}, testExe(t), "sleep", "30s")
	if err != nil {
		t.Fatal(err)
	}
	waitEvent(t, p3, "ready")
	cancel()
	select {
	case <-p3.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("ctx cancel did not stop the process")
	}
}

func TestStartEnv(t *testing.T) {
	t.Parallel()
	l := New(t, Options{Hosts: 1})
	p, err := l.Hosts[0].Start(t.Context(), []string{helperEnv + "=1", helperRace, "NETLAB_X=first", "NETLAB_X=second"}, testExe(t), "env")
	if err != nil {
		t.Fatal(err)
	}
	if got := waitEvent(t, p, "env"); got.Str("x") != "second" || got.Str("path") == "" {
		t.Errorf("env line %s", got.Raw)
	}
	if err := p.Wait(); err != nil {
		t.Error(err)
	}
}

func TestClose(t *testing.T) {
	t.Parallel()
	Require(t)
	l, err := NewLab(Options{Hosts: 2, Name: "close"})
	if err != nil {
		t.Fatal(err)
	}
	nss := l.namespaces()
	p := helperStart(t, l.Hosts[0], "json")
	waitEvent(t, p, "ready")
	// A stray process the lab does not track.
	stray := helperCmd(context.Background(), t, l.Hosts[1], "sleep", "30s")
	if err := stray.Start(); err != nil {
		t.Fatal(err)
	}
	strayDone := make(chan error, 1)
	go func() { strayDone <- stray.Wait() }()
	// Wait until the stray runs inside the namespace.
	for i := 0; ; i++ {
		out, _ := exec.Command("ip", "netns", "pids", l.Hosts[1].NS).Output()
		if slices.Contains(strings.Fields(string(out)), fmt.Sprint(stray.Process.Pid)) {
			break
		}
		if i == 100 {
			t.Fatal("stray process never entered the namespace")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if err := l.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	select {
	case <-p.Done():
	default:
		t.Error("process still running after Close")
	}
	select {
	case <-strayDone:
	case <-time.After(10 * time.Second):
		_ = stray.Process.Kill()
		t.Error("stray process survived Close")
	}
	left, _ := listNamespaces()
	for _, ns := range nss {
		if slices.Contains(left, ns) {
			t.Errorf("namespace %s left after Close", ns)
		}
	}
	if _, err := l.Hosts[0].Start(context.Background(), nil, "true"); !errors.Is(err, ErrClosed) {
		t.Errorf("Start after Close: %v", err)
	}
	if err := l.Hosts[0].Cut(); !errors.Is(err, ErrClosed) {
		t.Errorf("Cut after Close: %v", err)
	}
	if err := l.Partition([]int{0}); !errors.Is(err, ErrClosed) {
		t.Errorf("Partition after Close: %v", err)
	}
}

// Not parallel: the New of any other test would clean the stale namespace
// first.
func TestStaleCleanup(t *testing.T) {
	Require(t)
	// A pid that is surely dead: a process we started and reaped.
	dead := exec.Command("true")
	if err := dead.Run(); err != nil {
		t.Fatal(err)
	}
	stale := fmt.Sprintf("%s%d-beef-sw", Prefix, dead.Process.Pid)
	if err := run(context.Background(), "", "ip", "netns", "add", stale); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = deleteNamespaces([]string{stale}) }) // if the test fails
	// A process still inside the stale namespace.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	inside := exec.CommandContext(ctx, "ip", "netns", "exec", stale, testExe(t), "sleep", "30s")
	inside.Env = append(os.Environ(), helperEnv+"=1", helperRace)
	stdout, err := inside.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := inside.Start(); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 64)
	if n, err := stdout.Read(buf); err != nil || !strings.Contains(string(buf[:n]), "ready") {
		t.Fatalf("stale helper: %q %v", buf[:n], err)
	}
	// A stale build directory.
	buildLeft, err := os.MkdirTemp("", fmt.Sprintf("%s%d-", buildPrefix, dead.Process.Pid))
	if err != nil {
		t.Fatal(err)
	}
	l := New(t, Options{Hosts: 1})
	if err := inside.Wait(); err == nil {
		t.Error("process in the stale namespace exited 0, want killed")
	}
	names, _ := listNamespaces()
	if slices.Contains(names, stale) {
		t.Errorf("stale namespace %s still there", stale)
	}
	if !slices.Contains(names, l.Hosts[0].NS) {
		t.Errorf("our own namespace %s is gone", l.Hosts[0].NS)
	}
	if _, err := os.Stat(buildLeft); !os.IsNotExist(err) {
		t.Errorf("stale build dir %s: %v", buildLeft, err)
	}
}

func TestBuildAndRun(t *testing.T) {
	t.Parallel()
	l := New(t, Options{Hosts: 2})
	bin := BuildCached(t, "./testdata/jsonline")
	if again := BuildCached(t, "./testdata/jsonline"); again != bin {
		t.Errorf("second build: %s, want cached %s", again, bin)
	}
	p, err := l.Hosts[1].Start(t.Context(), []string{"NODE_HOST=" + l.Hosts[1].IP.String()}, bin)
	if err != nil {
		t.Fatal(err)
	}
	ready := waitEvent(t, p, "ready")
	if ready.Node() != "jsonline@198.18.0.11" || !strings.Contains(string(ready.Raw), "198.18.0.11/16") {
		t.Errorf("ready line %s", ready.Raw)
	}
	if err := p.Stop(); err != nil {
		t.Fatalf("Stop: %v (stderr %s)", err, p.Stderr())
	}
	waitEvent(t, p, "bye")
}

func TestLine(t *testing.T) {
	p := &Proc{notify: make(chan struct{})}
	w := (*stdoutWriter)(p)
	for _, chunk := range []string{`{"event":"nodeup","node":"a@h:1","incarnation":18446744073709551615,"ok":true,"x":null}`, "\r\n{\"event\":", "\"lost\"}\n", "plain\n", "[1,2]\n"} {
		if _, err := w.Write([]byte(chunk)); err != nil {
			t.Fatal(err)
		}
	}
	ev := p.Events()
	if len(ev) != 4 {
		t.Fatalf("got %d lines: %v", len(ev), ev)
	}
	l := ev[0]
	if l.Event() != "nodeup" || l.Node() != "a@h:1" || l.Str("ok") != "true" || l.Str("x") != "" || l.Str("missing") != "" {
		t.Errorf("line 0: %v", l.Fields)
	}
	if u, ok := l.Uint("incarnation"); !ok || u != 18446744073709551615 {
		t.Errorf("Uint: %d %v", u, ok)
	}
	if ev[1].Event() != "lost" || ev[2].Fields != nil || ev[3].Fields != nil || string(ev[2].Raw) != "plain" {
		t.Errorf("lines: %q %q %q", ev[1].Raw, ev[2].Raw, ev[3].Raw)
	}
	// Stderr keeps the end.
	e := (*stderrWriter)(p)
	for i := range 300 {
		fmt.Fprintf(e, "%04d %s\n", i, strings.Repeat("x", 1000))
	}
	s := p.Stderr()
	if len(s) > StderrSize || !strings.HasSuffix(s, "x\n") || !strings.Contains(s, "0299 ") || strings.Contains(s, "0100 ") {
		t.Errorf("stderr: %d bytes", len(s))
	}
}

func TestCleanEnv(t *testing.T) {
	got := cleanEnv([]string{"A=1", "HTTP_PROXY=x", "https_proxy=y", "NO_PROXY=z", "PATH=/bin"})
	if !slices.Equal(got, []string{"A=1", "PATH=/bin"}) {
		t.Errorf("cleanEnv: %q", got)
	}
}

func BenchmarkNew(b *testing.B) {
	for _, n := range []int{10, 50, 60} {
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			Require(b)
			for b.Loop() {
				l, err := NewLab(Options{Hosts: n})
				if err != nil {
					b.Fatal(err)
				}
				b.StopTimer()
				if err := l.Close(); err != nil {
					b.Fatal(err)
				}
				b.StartTimer()
			}
		})
	}
}
