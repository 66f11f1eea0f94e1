// Package mcast is the one UDP multicast socket and interface watcher that
// gossip, mdns and the doctor command share.
//
// # Sockets
//
// Listen binds the wildcard address of the group's family ("0.0.0.0:PORT"
// or "[::]:PORT") and returns a Conn bound to that group. Before bind it
// sets:
//
//   - SO_REUSEADDR, so that several nodes on one host share the port (on
//     Linux every socket bound to the port gets its own copy of each
//     multicast or broadcast datagram). SO_REUSEPORT is set too on the BSDs
//     and macOS, which need both for that; not on Linux, where it would
//     load-balance unicast and adds nothing for fan-out.
//   - On Linux, IP_MULTICAST_ALL / IPV6_MULTICAST_ALL off, so the socket
//     receives only the groups it joined itself, not every group some other
//     socket of the host joined on the same port. IP_MULTICAST_ALL exists
//     since Linux 2.6.31 and its failure is an error; IPV6_MULTICAST_ALL
//     exists since Linux 4.20, and ENOPROTOOPT from an older kernel is
//     tolerated (nothing else is).
//   - SO_BROADCAST when Config.Broadcast is set.
//
// After bind: multicast loopback on (nodes on one host hear each other),
// the TTL or hop limit of Config.TTL, and the control messages that give
// each datagram's destination address and arrival interface (IP_PKTINFO,
// IPV6_RECVPKTINFO, or the BSD equivalents). The caller joins the group per
// interface (Conn.Join) and chooses the interface per packet (Conn.WriteTo
// sends with IP_PKTINFO / IPV6_PKTINFO), so sends on several interfaces need
// no lock around IP_MULTICAST_IF.
//
// Conn.Read survives the errors a UDP socket reports and keeps working
// (ICMP errors queued on the socket, ENOBUFS, ...): it tells
// Config.ReadError and reads again after a pause that Close cuts short. It
// returns an error only once the Conn is closed or a read deadline passed.
//
// # Interfaces
//
// List returns every interface with its addresses; Want.Select picks the
// ones to use: the named ones that are up (any flags otherwise, so "lo",
// which lacks the MULTICAST flag on Linux, can be named), or by default
// every interface that is up, running, multicast-capable (broadcast-capable
// for broadcast use) and not loopback, optionally only those with an IPv4
// address to send from.
//
// # Watching
//
// Watch reports changes of the interfaces, their flags and their addresses
// on a channel, so that callers rescan only when something changed. On
// Linux it subscribes to rtnetlink link and address events (RTMGRP_LINK,
// RTMGRP_IPV4_IFADDR, RTMGRP_IPV6_IFADDR) and compares the interfaces
// again every 30 s in case events were lost; elsewhere, or where the
// subscription fails, it compares them every 3 s.
//
// Only Linux is tested; the package builds on the BSDs, macOS and Windows.
// On Windows golang.org/x/net does not implement the control messages, so
// Listen fails there.
package mcast
