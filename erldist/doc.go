// Package erldist makes a Go program a node of an Erlang cluster: it speaks the Erlang
// distribution protocol (erts "Distribution Protocol" and "External Term Format"), so Erlang
// and Elixir nodes see it in nodes(), get nodeup/nodedown for it, ping it, send to its
// registered names and gen_server:call them, and it sends to theirs.
//
// Tested against OTP 25.2.3 (Debian 12's erlang-base) with real erl nodes started by the tests.
//
// # What it speaks
//
//   - EPMD: ALIVE2 registration (the connection is kept open; closing it unregisters),
//     PORT_PLEASE2 lookups, and an embedded EPMD (ListenEPMD, Config.EmbeddedEPMD) that answers
//     ALIVE2, PORT_PLEASE2 and NAMES for hosts where no epmd runs.
//   - Handshake version 6 only (DFLAG_HANDSHAKE_23, OTP 23 and later): the 'N' name message, the
//     status, the MD5 challenge over the cookie and the decimal challenge, both as initiator and
//     as acceptor. Simultaneous connects follow the protocol's rule: the acceptor with an attempt
//     of its own answers ok_simultaneous (and drops its own attempt) when the initiator's name is
//     greater, compared literally, else nok; Connect then waits for the winning attempt. A new
//     connection from a name still connected gets status alive; on "true" the old link is closed
//     (NodeDown, ErrRestarted) and the new one comes up: that is how a restarted Erlang node with a
//     new creation is accepted even before the old TCP connection is seen dead. As initiator the
//     node answers alive with "true" only when it has no link to the peer and accepts none from
//     it (OTP's is_pending); else "false": its attempt crossed the peer's, which stays the link.
//     Each simultaneous connect is logged at debug level with its winner.
//   - Ticks: an empty frame every TickTime/4 when nothing else was sent; a link that received
//     nothing for TickTime is closed with ErrTickTimeout (Erlang's net_tick_timeout). A tick
//     received when nothing was sent since the last one is answered, so a peer with a shorter
//     net_ticktime is not starved, and two Go nodes do not ping-pong.
//   - Messages without an atom cache or fragments (the pass-through 'p' form): SEND, SEND_SENDER,
//     REG_SEND (and their _TT trace-token forms), ALIAS_SEND for replies to gen:call's
//     [alias|Ref] tags, LINK, UNLINK, UNLINK_ID (acknowledged), EXIT, EXIT2 and the PAYLOAD_EXIT
//     forms (delivered to the linked mailbox as a Message with Exit set), MONITOR_P and DEMONITOR_P
//     (by name or pid; an unknown target gets MONITOR_P_EXIT noproc at once, as gen:call expects;
//     closing a Mailbox sends MONITOR_P_EXIT and EXIT with reason normal to its watchers;
//     Node.Call monitors its callee the same way and turns MONITOR_P_EXIT into ErrCallFailed).
//   - Services every Erlang node expects of a visible peer: net_kernel answers
//     {'$gen_call', From, {is_auth, Node}} with yes (net_adm:ping); rex answers features_request
//     with features_reply and an empty feature list (no erpc: that needs spawn requests, which
//     this node does not serve) and any rpc call with {badrpc, notsup}; global_name_server plays
//     the passive half of global's sync (protocol version 8: init_connect, the set_lock and
//     del_lock calls, lock_set, exchange, resolved, in_sync), so global:sync() returns on the
//     Erlang side. The Go node registers no global names and takes no global locks itself.
//
// # Terms
//
// Decode and Encode cover every tag of the external term format an OTP 23+ node sends without
// an atom cache: integers (small, 32-bit, big: int64 when it fits, else *big.Int), floats (new
// and the old 31-byte text form), atoms (UTF-8 and Latin-1, small and large), tuples, nil,
// strings (decoded as a List of int64, encoded back as STRING_EXT like term_to_binary), lists and
// improper lists, binaries and bitstrings, maps (as ordered pairs), pids (old and new), ports
// (old, new, v4), references (old, new, newer), local funs and exports, and compressed terms. The
// decoder is fuzzed: it never panics, never allocates by a length the input claims (each count
// is checked against the bytes left first), bounds nesting (2048) and inflation of compressed
// terms (64 MiB), and reports every malformed input as ErrTerm. Go encodes atoms as UTF-8, as OTP
// 26 does; OTP 25's term_to_binary defaults to ATOM_EXT, which Go reads.
//
// # Threat model
//
// The cookie is the only authentication, exactly as in Erlang: anyone with it is a full member
// and the links are not encrypted. Run it on loopback, a private network or a VPN, as Erlang
// distribution itself. Before the handshake completes a peer can make this node read at most a
// 4 KiB handshake message per connection, for at most SetupTime; afterwards a message is bounded
// by MaxMessage and decoded with the limits above. Mailboxes are bounded (MailboxSize): a full
// one drops and counts (Node.Dropped), as the link must keep reading to keep its ticks.
//
// # Using it
//
//	n, err := erldist.Start(ctx, erldist.Config{Name: "go@10.0.0.5", Cookie: cookie})
//	box, _ := n.Register("orders")             // {orders, 'go@10.0.0.5'} ! Msg arrives on box.C()
//	for m := range box.C() {
//		if m.Call != nil {                      // gen_server:call({orders, 'go@10.0.0.5'}, Req)
//			box.Reply(ctx, m, erldist.Atom("ok"))
//		}
//	}
//	n.Send(ctx, erldist.Name{Node: "app@10.0.0.7", Name: "logger"}, erldist.Tuple{...})
//	reply, err := n.Call(ctx, erldist.Name{Node: "app@10.0.0.7", Name: "my_server"}, req)
//
// OnNodeUp and OnNodeDown are called from one goroutine, in order, exactly once per link, also
// at Close; do not call Close from them. Node.Send sends from the node's own pid, which has no
// mailbox: to get replies, send from a Mailbox (Mailbox.Send).
//
// # Go and Erlang/Elixir nodes in one cluster
//
// Package cluster runs a Node next to its mesh with Config.Erlang (macula run --erlang): it
// announces the Erlang-form name in its gossip heartbeats, dials the Erlang nodes it discovers
// and reports their links in its event stream; the README section "Go and Erlang nodes in one
// cluster" shows that side. This package on its own:
//
// A Go node started with the cluster cookie and a long name joins an Erlang or Elixir cluster as
// a visible node. Both sides must use long names (-name, or --name in Elixir) and the same
// cookie, and resolve each other's host part.
//
// Erlang side:
//
//	$ erl -name app@10.0.0.7 -setcookie secret
//	1> net_adm:ping('go@10.0.0.5').
//	pong
//	2> {orders, 'go@10.0.0.5'} ! {new, 42}.
//	3> gen_server:call({orders, 'go@10.0.0.5'}, status).
//	ok
//	4> net_kernel:monitor_nodes(true).    % nodeup/nodedown for the Go node like any other
//
// Elixir side:
//
//	$ iex --name app@10.0.0.7 --cookie secret
//	iex> Node.connect(:"go@10.0.0.5")
//	true
//	iex> GenServer.call({:orders, :"go@10.0.0.5"}, :status)
//	:ok
//	iex> send({:orders, :"go@10.0.0.5"}, {:new, 42})
//
// Go side: erldist.Start as above, then Connect(ctx, "app@10.0.0.7") or wait for the Erlang node
// to connect (OnNodeUp). With no epmd on the Go host, set Config.EmbeddedEPMD; the Erlang nodes
// then find the Go node through it on port 4369 (or ERL_EPMD_PORT).
//
// Measured on loopback (2-core AMD EPYC, OTP 25.2.3): Go to Erlang connect, including the EPMD
// lookup, 12-14 ms (about 11 ms of it is the Erlang node's answer to the name message; Go to Go
// takes 0.4 ms); a message round trip Go -> Erlang -> Go 41-70 us (Go -> Go 27 us); nodedown on
// the Go side 4-8 ms after the Erlang process is killed, and after TickTime (4.0 s with 4 s)
// when it is frozen; nodedown on the Erlang side 0.5 ms after Node.Close; global:sync() with the
// Go node 0.2 s (the Erlang locker's own delay); a Call to a missing name fails (noproc) in
// 0.2 ms. Two Erlang nodes with global and the Go node, default tick times, stayed connected for
// 10 idle minutes (ERLDIST_IDLE=10m go test -run TestLongIdle ./erldist/).
//
// Not done yet: spawn requests (DFLAG_SPAWN: erpc:call, spawn/4 on the Go node), the atom cache
// and fragmented messages (not offered in the handshake, so peers do not use them), the pre-OTP 23
// handshake (version 5), global name registration from Go, and TLS distribution (-proto_dist
// inet_tls).
package erldist
