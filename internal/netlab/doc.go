//go:build linux

// Package netlab runs test hosts in Linux network namespaces: N hosts on one
// virtual switch, with faults on demand (cable cut, partition, loss, netem),
// for the scenario tests and for "macula bench". It needs root and iproute2
// (ip, tc; nft for Loss; /dev/net/tun for Options.Impair).
//
// # Topology
//
// One lab with run id ID = "mlab-<pid>-<4 hex>":
//
//	 namespace ID-h0          namespace ID-h1               namespace ID-h<N-1>
//	+-----------------+      +-----------------+           +-----------------+
//	| lo              |      | lo              |           | lo              |
//	| eth0            |      | eth0            |    ...    | eth0            |
//	| 198.18.0.10/16  |      | 198.18.0.11/16  |           | 198.18.0.<N+9>  |
//	| fdca:1ab::10/64 |      | fdca:1ab::11/64 |           | fdca:1ab::<N+9> |
//	+-------+---------+      +-------+---------+           +-------+---------+
//	        | veth pair              |                             |
//	+-------+------------------------+-----------------------------+---------+
//	|      vh0                      vh1                          vh<N-1>     |
//	|       +----------- br0 (bridge, mcast_snooping 0) ---------+           |
//	|       br1, br2, ... only while partitioned                              |
//	|                          namespace ID-sw (the switch)                   |
//	+-------------------------------------------------------------------------+
//
// Inside each host: lo and eth0 up, eth0 with multicast on, the broadcast
// address 198.18.255.255, the route 224.0.0.0/4 dev eth0 (IPv6 multicast
// uses the kernel's ff00::/8 route on eth0), no duplicate address detection
// (addresses, link-local included, are usable at once). The bridge does no
// IGMP/MLD snooping, so multicast floods to every host, and no STP, so ports
// forward at once. The switch namespace has IPv6 disabled: it only bridges.
//
// # Addressing
//
// Host i (Lab.Hosts[i]) has IP 198.18.0.(i+10) in 198.18.0.0/16 (RFC 2544,
// benchmarking) and IP6 fdca:1ab::(i+10) in fdca:1ab::/64, the number written
// with the same decimal digits (host 2 is 198.18.0.12 and fdca:1ab::12).
// Up to MaxHosts hosts.
//
// # Safety
//
// Nothing is created in the root namespace: the namespaces are made first,
// then each veth pair is made inside the switch namespace with its peer
// placed directly in the host namespace as eth0 (Impair labs: each TAP is
// created from a thread inside its namespace), and every later command runs
// with "ip -n NS", "tc -n NS" or "ip netns exec NS". There is no link between
// the lab and the machine's interfaces, so no lab packet can reach a real
// network, and no real traffic can reach the lab. Namespace names carry the
// pid and a random id, so labs of concurrent runs never collide.
//
// # Cleanup
//
// Lab.Close kills every process started in the lab and any other process
// still inside its namespaces, stops the forwarders of an Impair lab
// (closing its TAPs), then deletes the namespaces (which removes veths and
// bridges). New registers Close with t.Cleanup. NewLab is for
// code without a testing.TB (the bench command): the caller must Close the
// lab, also on SIGINT/SIGTERM; the package installs no signal handler.
// Processes started by Host.Start get SIGKILL when the starting process
// dies. If a run dies without Close (panic, test timeout, SIGKILL), the
// next New or NewLab on the machine removes the namespaces whose pid is
// dead (CleanStale).
//
// # Faults
//
//   - Host.Cut / Restore: the switch-side veth goes down/up; packets are lost
//     silently (no FIN, no RST) and the host sees its eth0 lose carrier.
//   - Lab.Partition(groups...) / Heal: hosts in different groups cannot
//     talk. With nft, the rules of one bridge-family chain in the switch
//     namespace drop frames between the groups' ports, added and flushed
//     in one transaction each (AtomicCut); without it the groups are moved
//     to bridges of their own, port by port.
//   - Host.Netem(spec) / ClearNetem: "tc qdisc replace dev eth0 root netem
//     SPEC" in the host (egress). Kernels without netem return
//     ErrNetemUnsupported; RequireNetem skips such tests, also under CI=true
//     (no install step can add a kernel option). On an Impair lab, Netem
//     parses the common subset ("loss 20%", "delay 10ms 50ms") into the
//     host's egress impairment (ImpairEgress), as netem on eth0 would be.
//   - Host.Loss(percent): random loss of what the host sends, by an nftables
//     rule on the switch side; works without netem.
//   - Host.Impair / ImpairEgress / ImpairIngress / ClearImpair: loss, delay
//     and jitter in userspace, on labs made with Options.Impair (below).
//
// # Impair labs: loss and delay without netem
//
// Kernels built without netem (CONFIG_NET_SCH_NETEM unset, as on this
// project's test machines and CI) cannot delay packets: tc has no other
// delaying qdisc, and nftables can drop at random but not hold a packet.
// Options{Impair: true} builds each host's link from two TAP devices instead
// of a veth pair, with a forwarder in the process that made the lab:
//
//	  namespace ID-h<i>                     namespace ID-sw
//	+------------------+                  +------------------------+
//	| eth0 (TAP)       |                  | t<i> (TAP) -- br0 ...  |
//	+--------+---------+                  +-----------+------------+
//	         | fd                                     | fd
//	         +---- forwarder: 2 goroutines, one -------+
//	               per direction, in this process
//
// Each TAP is created by opening /dev/net/tun on a locked OS thread that
// entered the target namespace (the root namespace never sees it), and
// lives as long as its file descriptor: Lab.Close closes them, which stops
// the goroutines at once (frames still queued are dropped), and a dead
// process takes its TAPs with it. The bridge, addresses, multicast,
// Cut/Restore, Partition/Heal, Loss and Counters work as in a veth lab;
// eth0 is a TAP with txqueuelen 4096 instead of a veth.
//
// Host.Impair(Impairment{Loss, Delay, Jitter}) works like netem: each frame
// is dropped with probability Loss, otherwise delivered after Delay plus a
// uniform random amount in [-Jitter, +Jitter] (clamped at 0). As with
// netem, jitter reorders frames; a fixed delay does not. Each direction has
// its own delay queue (a min-heap by due time, bounded by Impairment.Limit,
// default 10000 frames: beyond that frames are dropped and counted), and
// its own impairment:
//
//   - Impair sets both directions: a frame between two impaired hosts is
//     impaired twice (sender's egress, receiver's ingress), so Loss 0.2 on
//     every host loses 1-0.8*0.8 = 36% of the frames between two of them,
//     and Delay 100ms on one host adds 200 ms to its round trips.
//   - Host.Netem(spec) on an Impair lab parses netem's common subset
//     ("loss 20%", "delay 10ms", "delay 10ms 50ms", "limit 1000"; see
//     ParseNetem) and sets the egress only, which is what netem on eth0
//     does; ClearNetem clears it. So "loss 20% delay 50ms 50ms" via Netem
//     on every host means what it would mean with kernel netem. Other
//     netem features return an error wrapping errors.ErrUnsupported.
//   - ImpairEgress and ImpairIngress set one direction.
//
// A new impairment applies to frames read after it; queued frames keep
// their time. Host.ImpairStats counts, per direction, frames forwarded,
// dropped by loss, dropped because the queue was full, dropped by a cut,
// and failed writes (e.g. to an eth0 the host set down).
//
// Cut on an Impair lab makes the forwarder drop every frame of the host,
// those already queued included (they are lost even if Restore comes
// before their time), and takes the carrier away from the host's eth0
// (TUNSETCARRIER), as a veth does when its peer goes down: the host sees
// silent loss, no FIN, no RST. Restore gives both back.
//
// Loss hits ARP and neighbour discovery too: impair after the hosts have
// talked once, or expect address resolution to take retries (1 s each),
// during which the kernel holds packets to the unresolved neighbour and
// blocks UDP senders whose send buffer they fill.
//
// Costs. Every frame crosses userspace twice (a read and a write system
// call per TAP), and the write into a host's eth0 runs that host's receive
// path in the forwarder's thread: about 2.5 us of CPU per frame and hop, so
// 5 us from one host to another. Measured on an idle 2-core VM
// (BenchmarkForward: 100-byte UDP frames from one host to another, sender
// and receiver helper processes on the same 2 cores):
//
//	lab and load                          delivered/s  loss    CPU of the lab's process
//	veth, 100k frames/s                   100k         0       0
//	Impair, 100k frames/s                 100k         0       0.45-0.55 core
//	Impair, 100k/s, delay 50ms            100k         0       0.7-0.75 core
//	Impair, 100k/s, loss 20% jitter 50ms  64k          36% (*) 0.55 core
//	veth, sender at full speed            230-310k     0       0
//	Impair, sender at full speed (~500k)  185-210k     55-65%  1 core
//
//	(*) Impair on both hosts: 1-0.8*0.8
//
// Beyond its capacity the forwarder falls behind and the TAP rings overflow
// (counted as TX drops of eth0 or t<i>, not in ImpairStats). On a loaded
// machine (load average 20-50 from parallel test runs) the same 100k
// frames/s lost 25-45%: keep floods well below the capacity, and check
// Counters and ImpairStats. A -race build of the lab's process is slower.
// Idle labs cost nothing measurable (20 hosts: 6 ms of CPU per second for
// the IPv6 chatter). Memory: 64 KiB read buffer per direction (frames up to
// MTU 65521), plus 2 KiB per queued frame: 10000 queued frames per
// direction is 20 MiB.
//
// The forwarder stops when the lab's process stops: do not SIGSTOP it or
// pause it in a debugger, and expect its garbage collector's pauses (well
// under a millisecond) in the delays.
//
// # Use from a test
//
//	func TestTwoNodes(t *testing.T) {
//		lab := netlab.New(t, netlab.Options{Hosts: 2}) // skips without root
//		bin := netlab.BuildMacula(t)
//		var procs []*netlab.Proc
//		for _, h := range lab.Hosts {
//			p, err := h.Start(t.Context(), nil, bin, "run", "--json", "--interface", h.Iface,
//				"--name", "n"+strconv.Itoa(h.Index)+"@"+h.IP.String())
//			if err != nil {
//				t.Fatal(err)
//			}
//			procs = append(procs, p)
//		}
//		ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
//		defer cancel()
//		_, err := procs[0].WaitFor(ctx, func(l netlab.Line) bool { return l.Event() == "nodeup" })
//		...
//		since := time.Now()
//		lab.Hosts[1].Cut()
//		procs[0].WaitFor(ctx, func(l netlab.Line) bool { return l.Event() == "nodedown" && l.At.After(since) })
//	}
//
// and in the package's TestMain, to remove BuildMacula's binary:
//
//	goleak.VerifyTestMain(m, goleak.Cleanup(func(code int) { netlab.Cleanup(); os.Exit(code) }))
//
// Every stdout line of a Proc is kept with the time it was read (Line.At)
// and parsed as JSON when it is an object; WaitFor also sees lines that came
// before the call, so wait for something new by comparing Line.At with a
// time taken before the action. When a test fails, New's cleanup logs the
// last lines and stderr of every process of the lab.
//
// A binary built with -race sleeps 1 s at exit unless GORACE contains
// atexit_sleep_ms=0; pass it in Start's env for such binaries.
package netlab
