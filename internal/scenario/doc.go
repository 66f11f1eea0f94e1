//go:build linux

// Package scenario runs multi-host cluster scenarios in network namespaces
// (package netlab) and measures what happens: one "macula run --json"
// process per lab host, faults injected from outside (SIGKILL, cable cut,
// partition, packet loss, restarts, hostile gossip), and the JSON event
// lines of every process, timestamped by netlab when they are read, checked
// against the invariants a cluster must keep.
//
// # Scenarios
//
//   - formation: N nodes started together form a full mesh; then the
//     steady-state cost per node (CPU, bytes on eth0) over a window.
//   - latejoin: a node added to a formed mesh is connected both ways.
//   - crash: SIGKILL one node; every peer reports it down, reason closed
//     (detection median, p95, max), and no live peer is reported down.
//   - silent: cut one host's cable; every peer reports it down, reason
//     timeout (median, p95, max), and no other link drops.
//   - partition: split the lab 50/50, each side reports the other down
//     (timeout); heal, the full mesh comes back, and nothing is reported
//     down after the heal.
//   - loss10, loss: 10% and 20% packet loss with 50 ms jitter (when netlab
//     can impair) on every host for a while: no nodedown at all.
//   - starve: one node's process stopped (SIGSTOP) for 2 s, several times
//     at random moments, as a host starved of CPU: no nodedown at the
//     others nor at the starved node.
//   - churn: random restarts by SIGTERM and SIGKILL: every peer reports
//     exactly one nodedown and one nodeup per restart.
//   - security: a node with a wrong gossip secret is never discovered, one
//     with a wrong cookie is never connected; the others form their mesh.
//   - flood: hostile gossip packets (unsigned, wrong HMAC, malformed, unique
//     names) at a high rate at one node, addressed to the gossip group and
//     port but sent as Ethernet frames to the target's MAC only (on one
//     machine a group flood would make every node pay for every packet):
//     membership does not change, memory stays bounded, the target keeps
//     answering /healthz.
//
// Each runner makes its own lab (NewLab), returns a Result with measures
// and violations (a violation is a broken invariant: a false nodedown, a
// duplicate nodeup, a missing event, ...), and always closes the lab, also
// when its context is cancelled. Speed goals are not violations; they are
// compared by "macula bench".
//
// # Node names and flags
//
// Node i runs on lab host i as "n<i>@<host IP>" with
//
//	run --json --interface eth0 --listen <IP>:9100 --name n<i>@<IP>
//	    --secret S --cookie C --link-timeout T --interval I
//
// # Network safety
//
// Every process runs inside a namespace of the lab. The flooder does not
// need a process: netlab.InNetns runs a goroutine locked to its OS thread
// that enters the flooder host's namespace (setns), creates the socket
// there (an AF_PACKET socket bound to that host's eth0, or for a group
// flood a UDP socket), and goes back; a socket stays in the namespace it
// was created in, so every packet leaves through that host's eth0 onto the
// lab's bridge and nowhere else. The /healthz probe dials the same way, inside the target's
// namespace.
//
// # Limits of the machine
//
// The kernel's IPv4 neighbour table is shared by every namespace and holds
// net.ipv4.neigh.default.gc_thresh3 entries (1024 by default): a fully
// meshed lab of n hosts needs about n*n, so above about 30 hosts new ARP
// entries and multicast sends fail with ENOBUFS and the mesh cannot form.
// "macula bench" raises the limit for its run; Scenario.Run notes overflows
// (NeighTableFulls) and input backlog drops (BacklogDrops) in the result.
package scenario
