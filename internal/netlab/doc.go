// Package netlab runs test hosts in Linux network namespaces: N hosts on one
// virtual switch, with faults on demand (cable cut, partition, loss, netem),
// for the scenario tests and for "macula bench". It needs root and iproute2
// (ip, tc; nft for Loss).
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
// placed directly in the host namespace as eth0, and every later command runs
// with "ip -n NS", "tc -n NS" or "ip netns exec NS". There is no link between
// the lab and the machine's interfaces, so no lab packet can reach a real
// network, and no real traffic can reach the lab. Namespace names carry the
// pid and a random id, so labs of concurrent runs never collide.
//
// # Cleanup
//
// Lab.Close kills every process started in the lab and any other process
// still inside its namespaces, then deletes the namespaces (which removes
// veths and bridges). New registers Close with t.Cleanup. NewLab is for
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
//   - Lab.Partition(groups...) / Heal: groups are moved to bridges of their
//     own; hosts in different groups cannot talk.
//   - Host.Netem(spec) / ClearNetem: "tc qdisc replace dev eth0 root netem
//     SPEC" in the host (egress). Kernels without netem return
//     ErrNetemUnsupported; RequireNetem skips such tests, also under CI=true
//     (no install step can add a kernel option). On an Impair lab, Netem
//     parses the common subset ("loss 20%", "delay 10ms 50ms") into Impair.
//   - Host.Loss(percent): random loss of what the host sends, by an nftables
//     rule on the switch side; works without netem.
//   - Host.Impair(Impairment{Loss, Delay, Jitter}) on a lab made with
//     Options.Impair: netem in userspace, for kernels without netem (this
//     project's CI kernel has none). Each host's link is then two TAP
//     devices, eth0 in the host and t<i> on the switch's bridge, joined by a
//     forwarder (two goroutines per host in the process that made the lab)
//     that drops each frame with probability Loss and delivers the others
//     after Delay ± uniform Jitter, holding at most Limit frames per
//     direction (more are dropped and counted). With Jitter frames overtake
//     each other, as with netem. Cut, Partition and the rest work the same.
//     Cost: every frame crosses user space twice (host to forwarder to
//     bridge), so Impair labs are for scenarios that need impairment, not
//     for floods.
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
