package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"sync"
	"text/tabwriter"
	"time"

	cluster "github.com/macula-io/cluster"
	"github.com/macula-io/cluster/gossip"
	"github.com/macula-io/cluster/mesh"
)

// The demo runs entirely on the loopback interface: nothing leaves the
// machine, no root is needed, and a real cluster on this host is not
// disturbed (a random gossip port, a secret of its own).
func cmdDemo(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("demo", stderr)
	n := fs.Int("nodes", 5, "how many nodes to start (2-32)")
	timeout := fs.Duration("timeout", 8*time.Second, "give up when the cluster has not formed by then")
	verbose := fs.Bool("v", false, "verbose: print every event as it happens (-v means verbose in every command; the version is \"macula version\")")
	var lf logFlags
	lf.register(fs)
	lf.level = "error"
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *n < 2 || *n > 32 {
		return usageError{fmt.Errorf("--nodes %d: want 2 to 32", *n)}
	}
	log, err := lf.logger(stderr)
	if err != nil {
		return err
	}
	lo, err := loopbackInterface()
	if err != nil {
		return err
	}
	port, err := freeUDPPort()
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()

	d := &demo{out: stdout, n: *n, verbose: *verbose, start: time.Now(), changed: make(chan struct{}, 1)}
	fmt.Fprintf(stdout, "macula demo: %d nodes on %s, gossip group 230.1.1.251:%d (HMAC secret), mesh on 127.0.0.1\n\n", *n, lo, port)

	nodes := make([]*cluster.Cluster, *n)
	defer func() {
		for _, c := range nodes {
			if c != nil {
				c.Close()
			}
		}
	}()
	for i := range nodes {
		i := i
		name := fmt.Sprintf("demo%d@127.0.0.1", i+1)
		cfg := cluster.Config{
			Strategy: cluster.StrategyGossip,
			Gossip: gossip.Config{Interfaces: []string{lo}, Port: port, Interval: 500 * time.Millisecond,
				Secrets: []string{"macula-demo-secret"}},
			Mesh: mesh.Config{Name: name, Cookie: "macula-demo-cookie", Listen: "127.0.0.1:0",
				LinkTimeout: 2 * time.Second,
				OnMessage:   func(from string, payload []byte) { d.message(i, from, payload) }},
			EventQueue: -1,
			Logger:     log,
			OnEvent:    func(e cluster.Event) { d.event(i, e) },
		}
		c, err := cluster.Start(ctx, cfg)
		if err != nil {
			return fmt.Errorf("start %s: %w", name, err)
		}
		nodes[i] = c
		d.mu.Lock()
		d.names = append(d.names, c.Self().Node)
		d.mu.Unlock()
	}
	lastStart := time.Since(d.start)
	fmt.Fprintf(stdout, "started %d nodes in %v\n", *n, ms(lastStart))

	// 1. Discovery and the full mesh.
	if err := d.waitFor(ctx, func() bool { return d.fullMesh() }); err != nil {
		return d.fail(err, "the full mesh did not form: loopback multicast may be impossible here (run `macula doctor --interface "+lo+"`)")
	}
	formed := time.Since(d.start)
	fmt.Fprintf(stdout, "full mesh: every node discovered and connected to the %d others after %v (%v after the last start)\n",
		*n-1, ms(formed), ms(formed-lastStart))

	// 2. A message around the ring: node 1 -> 2 -> ... -> n -> 1.
	d.mu.Lock()
	d.ringNodes = nodes
	d.ringStart = time.Now()
	d.mu.Unlock()
	if err := nodes[0].Send(ctx, d.names[1], []byte("hop 1")); err != nil {
		return d.fail(err, "send")
	}
	if err := d.waitFor(ctx, func() bool { d.mu.Lock(); defer d.mu.Unlock(); return d.ringDone > 0 }); err != nil {
		return d.fail(err, "the message did not come back around the ring")
	}
	fmt.Fprintf(stdout, "message passed around the mesh: %d hops, back at %s in %v\n", *n, d.names[0], us(d.ringDone))

	// 3. Stop the last node: every other node sees it leave.
	last := *n - 1
	leaving := d.names[last]
	stopAt := time.Now()
	d.mu.Lock()
	d.stopAt = stopAt
	d.mu.Unlock()
	nodes[last].Close()
	nodes[last] = nil
	if err := d.waitFor(ctx, func() bool { return d.allSawDown(leaving, last) }); err != nil {
		return d.fail(err, "not every node saw "+leaving+" leave")
	}
	fmt.Fprintf(stdout, "stopped %s: all %d others reported nodedown (left) within %v\n\n", leaving, *n-1, us(d.maxDownLatency(leaving)))

	d.summary(nodes)
	return nil
}

type demo struct {
	out     io.Writer
	n       int
	verbose bool
	start   time.Time
	changed chan struct{}

	mu        sync.Mutex
	names     []string
	disc      [32]map[string]bool
	up        [32]map[string]bool
	events    [32]int
	downAt    [32]map[string]time.Time
	downWhy   [32]map[string]string
	ringNodes []*cluster.Cluster
	ringStart time.Time
	ringDone  time.Duration
	stopAt    time.Time
}

func (d *demo) event(i int, e cluster.Event) {
	d.mu.Lock()
	if d.disc[i] == nil {
		d.disc[i], d.up[i], d.downAt[i], d.downWhy[i] = map[string]bool{}, map[string]bool{}, map[string]time.Time{}, map[string]string{}
	}
	d.events[i]++
	switch e.Kind {
	case cluster.Discovered:
		d.disc[i][e.Node] = true
	case cluster.Lost:
		delete(d.disc[i], e.Node)
	case cluster.NodeUp:
		d.up[i][e.Node] = true
	case cluster.NodeDown:
		delete(d.up[i], e.Node)
		d.downAt[i][e.Node], d.downWhy[i][e.Node] = e.Time, e.Reason
	}
	if d.verbose {
		fmt.Fprintf(d.out, "  %8v  demo%d: %s\n", ms(e.Time.Sub(d.start)), i+1, e)
	}
	d.mu.Unlock()
	select {
	case d.changed <- struct{}{}:
	default:
	}
}

func (d *demo) message(i int, from string, payload []byte) {
	d.mu.Lock()
	nodes, names := d.ringNodes, d.names
	if i == 0 {
		d.ringDone = time.Since(d.ringStart)
		d.mu.Unlock()
		select {
		case d.changed <- struct{}{}:
		default:
		}
		return
	}
	d.mu.Unlock()
	next := (i + 1) % len(names)
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if nodes != nil {
		nodes[i].Send(ctx, names[next], []byte(fmt.Sprintf("hop %d", i+1)))
	}
}

func (d *demo) fullMesh() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	for i := 0; i < d.n; i++ {
		if len(d.disc[i]) < d.n-1 || len(d.up[i]) < d.n-1 {
			return false
		}
	}
	return true
}

func (d *demo) allSawDown(node string, except int) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	for i := 0; i < d.n; i++ {
		if i == except {
			continue
		}
		if _, ok := d.downAt[i][node]; !ok {
			return false
		}
	}
	return true
}

func (d *demo) maxDownLatency(node string) time.Duration {
	d.mu.Lock()
	defer d.mu.Unlock()
	var worst time.Duration
	for i := 0; i < d.n; i++ {
		if t, ok := d.downAt[i][node]; ok && t.Sub(d.stopAt) > worst {
			worst = t.Sub(d.stopAt)
		}
	}
	return worst
}

func (d *demo) waitFor(ctx context.Context, cond func() bool) error {
	for !cond() {
		select {
		case <-d.changed:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}

func (d *demo) fail(err error, what string) error {
	if errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("%s within the time limit", what)
	}
	return fmt.Errorf("%s: %w", what, err)
}

func (d *demo) summary(nodes []*cluster.Cluster) {
	d.mu.Lock()
	defer d.mu.Unlock()
	tw := tabwriter.NewWriter(d.out, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NODE\tMESH ADDR\tDISCOVERED\tCONNECTED\tEVENTS\tSAW LEAVE")
	for i, c := range nodes {
		addr := "(stopped)"
		if c != nil {
			addr = c.Self().Addr
		}
		leave := "-"
		if why, ok := d.downWhy[i][d.names[d.n-1]]; ok && i != d.n-1 {
			leave = why
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%d\t%s\n", d.names[i], addr, len(d.disc[i]), len(d.up[i]), d.events[i], leave)
	}
	tw.Flush()
}

func ms(d time.Duration) time.Duration { return d.Round(time.Millisecond) }
func us(d time.Duration) time.Duration { return d.Round(10 * time.Microsecond) }

func loopbackInterface() (string, error) {
	ifs, err := net.Interfaces()
	if err != nil {
		return "", fmt.Errorf("list interfaces: %w", err)
	}
	var names []string
	for _, ifi := range ifs {
		if ifi.Flags&net.FlagLoopback != 0 && ifi.Flags&net.FlagUp != 0 {
			names = append(names, ifi.Name)
		}
	}
	slices.Sort(names)
	if len(names) == 0 {
		return "", errors.New("no loopback interface is up; the demo runs on loopback only")
	}
	return names[0], nil
}

func freeUDPPort() (int, error) {
	c, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("pick a free UDP port on loopback: %w", err)
	}
	defer c.Close()
	return c.LocalAddr().(*net.UDPAddr).Port, nil
}
