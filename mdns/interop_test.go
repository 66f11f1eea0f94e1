//go:build linux

package mdns

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/macula-io/cluster/discovery"
	"github.com/macula-io/cluster/internal/disctest"
	"github.com/macula-io/cluster/internal/netlab"
)

// zeroconfScript registers a service with python3-zeroconf and browses for
// the service type, printing one JSON object per line. SIGUSR1 unregisters
// the service (goodbye), SIGTERM closes and exits.
const zeroconfScript = `
import json, signal, socket, sys, threading
import zeroconf
from zeroconf import IPVersion, ServiceBrowser, ServiceInfo, ServiceStateChange, Zeroconf

ip, node, label = sys.argv[1:4]
TYPE = "_macula._tcp.local."
lock = threading.Lock()

def out(**kw):
    with lock:
        print(json.dumps(kw), flush=True)

out(event="version", version=zeroconf.__version__)
zc = Zeroconf(interfaces=[ip], ip_version=IPVersion.V4Only)
own = label + "." + TYPE
info = ServiceInfo(TYPE, own, addresses=[socket.inet_aton(ip)], port=9100,
                   properties={"node": node, "v": "1"},
                   server=label.replace("@", "-").replace(":", "-") + ".local.")

def resolve(service_type, name):
    i = zc.get_service_info(service_type, name, timeout=5000)
    if i is None:
        out(event="unresolved", name=name)
        return
    props = {k.decode(): (v.decode() if v is not None else None) for k, v in i.properties.items()}
    out(event="added", name=name, node=props.get("node"), v=props.get("v"), port=i.port,
        server=i.server, addrs=i.parsed_addresses())

def on_change(zeroconf, service_type, name, state_change):
    if name == own:
        return
    if state_change is ServiceStateChange.Removed:
        out(event="removed", name=name)
    elif state_change is ServiceStateChange.Added:
        threading.Thread(target=resolve, args=(service_type, name), daemon=True).start()

stop, unreg = threading.Event(), threading.Event()
signal.signal(signal.SIGTERM, lambda *a: stop.set())
signal.signal(signal.SIGUSR1, lambda *a: unreg.set())
zc.register_service(info)
out(event="registered", name=own)
browser = ServiceBrowser(zc, TYPE, handlers=[on_change])
done = False
while not stop.is_set():
    stop.wait(0.05)
    if unreg.is_set() and not done:
        zc.unregister_service(info)
        done = True
        out(event="unregistered")
browser.cancel()
zc.close()
out(event="closed")
`

// requireZeroconf skips without /usr/bin/python3 and python3-zeroconf,
// unless CI=true, where it fails.
func requireZeroconf(t *testing.T) {
	t.Helper()
	err := exec.Command("/usr/bin/python3", "-c", "import zeroconf").Run()
	if err == nil {
		return
	}
	msg := fmt.Sprintf("python3-zeroconf not available (apt-get install python3-zeroconf): %v", err)
	if os.Getenv("CI") == "true" {
		t.Fatal(msg)
	}
	t.Skip(msg)
}

// TestInteropZeroconf runs this package in one network namespace (the test
// binary re-executed as TestHelperProcess) and python3-zeroconf in another,
// on the real mDNS port and group, and checks discovery both ways,
// goodbyes both ways.
func TestInteropZeroconf(t *testing.T) {
	t.Parallel()
	netlab.Require(t)
	requireZeroconf(t)
	lab := netlab.New(t, netlab.Options{Hosts: 2})
	goHost, pyHost := lab.Hosts[0], lab.Hosts[1]
	goNode := fmt.Sprintf("go@%s:9100", goHost.IP)
	pyNode := fmt.Sprintf("py@%s:9100", pyHost.IP)
	goLabel := instanceLabel(goNode)

	script := filepath.Join(t.TempDir(), "zc.py")
	if err := os.WriteFile(script, []byte(zeroconfScript), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 45*time.Second)
	defer cancel()
	py, err := pyHost.Start(ctx, nil, "/usr/bin/python3", script, pyHost.IP.String(), pyNode, instanceLabel(pyNode))
	if err != nil {
		t.Fatal(err)
	}
	if l, err := py.WaitFor(ctx, func(l netlab.Line) bool { return l.Event() == "version" }); err == nil {
		t.Logf("python3-zeroconf %s", l.Str("version"))
	}
	if _, err := py.WaitFor(ctx, func(l netlab.Line) bool { return l.Event() == "registered" }); err != nil {
		t.Fatal(err)
	}
	gp, err := goHost.Start(ctx, []string{"MDNS_HELPER=1", "MDNS_HELPER_NODE=" + goNode, "MDNS_HELPER_IF=" + goHost.Iface},
		os.Args[0], "-test.run=^TestHelperProcess$", "-test.count=1")
	if err != nil {
		t.Fatal(err)
	}
	peers := func(want ...string) func(netlab.Line) bool {
		return func(l netlab.Line) bool {
			if l.Event() != "peers" {
				return false
			}
			var got []string
			_ = json.Unmarshal([]byte(l.Str("nodes")), &got)
			return slices.Equal(got, want)
		}
	}

	// zeroconf lists and resolves our service.
	l, err := py.WaitFor(ctx, func(l netlab.Line) bool {
		return l.Event() == "added" && strings.HasPrefix(l.Str("name"), goLabel+".")
	})
	if err != nil {
		t.Fatalf("zeroconf did not find the Go node: %v\ngo stderr:\n%s", err, gp.Stderr())
	}
	if l.Str("node") != goNode || l.Str("v") != "1" || l.Str("port") != "9100" ||
		!strings.Contains(l.Str("addrs"), goHost.IP.String()) {
		t.Fatalf("zeroconf resolved %s", l)
	}
	// We discover the zeroconf service from its TXT node=.
	if _, err := gp.WaitFor(ctx, peers(pyNode)); err != nil {
		t.Fatalf("Go node did not find zeroconf's service: %v\npy stderr:\n%s", err, py.Stderr())
	}
	// zeroconf unregisters (goodbye): lost.
	if err := py.Signal(syscall.SIGUSR1); err != nil {
		t.Fatal(err)
	}
	if _, err := gp.WaitFor(ctx, peers()); err != nil {
		t.Fatalf("goodbye from zeroconf not seen: %v", err)
	}
	// We leave (goodbye): zeroconf removes us.
	if err := gp.Stop(); err != nil {
		t.Fatalf("go helper: %v\n%s", err, gp.Stderr())
	}
	if _, err := py.WaitFor(ctx, func(l netlab.Line) bool {
		return l.Event() == "removed" && strings.HasPrefix(l.Str("name"), goLabel+".")
	}); err != nil {
		t.Fatalf("zeroconf did not see our goodbye: %v", err)
	}
	if err := py.Stop(); err != nil {
		t.Logf("python: %v", err)
	}
	if testing.Verbose() {
		for _, l := range append(py.Events(), gp.Events()...) {
			t.Logf("%s", l)
		}
	}
}

// printSink prints the peer set after every Found and Gone, as
// {"event":"peers","nodes":"[...]"}.
type printSink struct {
	mu  sync.Mutex
	rec *disctest.Recorder
}

func (p *printSink) Found(peer discovery.Peer) {
	p.mu.Lock()
	p.rec.Found(peer)
	p.print()
	p.mu.Unlock()
}
func (p *printSink) Gone(peer discovery.Peer) {
	p.mu.Lock()
	p.rec.Gone(peer)
	p.print()
	p.mu.Unlock()
}

func (p *printSink) print() {
	b, _ := json.Marshal(nodes(p.rec.Peers()))
	line, _ := json.Marshal(map[string]string{"event": "peers", "nodes": string(b)})
	fmt.Println(string(line))
}

// TestHelperProcess is the Go side of TestInteropZeroconf, run inside a
// namespace: it prints {"event":"peers","nodes":"[...]"} per sink call and
// closes (goodbye) on SIGTERM.
func TestHelperProcess(t *testing.T) {
	if os.Getenv("MDNS_HELPER") != "1" {
		t.Skip("helper process for TestInteropZeroconf")
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	defer signal.Stop(sig)
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	s := NewStrategy(Config{Interfaces: []string{os.Getenv("MDNS_HELPER_IF")}, Logger: log})
	self, err := discovery.ParseNode(os.Getenv("MDNS_HELPER_NODE"))
	if err != nil {
		t.Fatal(err)
	}
	err = s.Start(context.Background(), self, &printSink{rec: disctest.New()})
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-sig:
	case <-time.After(60 * time.Second):
	}
	s.Close()
	fmt.Printf("{\"event\":\"closed\",\"stats\":%q}\n", fmt.Sprintf("%+v", s.Stats()))
}
