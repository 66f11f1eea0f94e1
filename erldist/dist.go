package erldist

import (
	"context"
	"errors"
	"fmt"
	"sync"
)

// Control message operations (erts "Distribution Protocol", protocol between connected nodes).
const (
	opLink              = 1
	opSend              = 2
	opExit              = 3
	opUnlink            = 4
	opRegSend           = 6
	opGroupLeader       = 7
	opExit2             = 8
	opSendTT            = 12
	opExitTT            = 13
	opRegSendTT         = 16
	opExit2TT           = 18
	opMonitorP          = 19
	opDemonitorP        = 20
	opMonitorPExit      = 21
	opSendSender        = 22
	opSendSenderTT      = 23
	opPayloadExit       = 24
	opPayloadExitTT     = 25
	opPayloadExit2      = 26
	opPayloadExit2TT    = 27
	opPayloadMonitorExt = 28
	opAliasSend         = 33
	opAliasSendTT       = 34
	opUnlinkID          = 35
	opUnlinkIDAck       = 36

	passThrough = 112 // 'p': a message without a distribution header
)

// Message is one message delivered to a Mailbox.
type Message struct {
	// Node is the node the message came from.
	Node string
	// From is the sender when the protocol tells it (REG_SEND, SEND_SENDER); zero otherwise.
	From Pid
	// Term is the message itself. For a gen_server:call it is the request (see Call).
	Term Term
	// Call is set for {'$gen_call', From, Request}: answer with Mailbox.Reply.
	Call *From
	// Exit is set for an exit signal from a linked process: Term is then the reason.
	Exit bool
}

// From identifies the caller of a gen_server:call, {Pid, Tag}.
type From struct {
	Pid Pid
	Tag Term
}

// Mailbox is a registered name and a pid of the Go node; its messages arrive on C.
type Mailbox struct {
	n    *Node
	name Atom
	pid  Pid
	c    chan Message

	mu       sync.Mutex
	links    map[Pid]struct{}
	monitors map[string]monitor // key: ref string
}

type monitor struct {
	by     Pid
	ref    Ref
	byName bool
}

// Register registers name (empty for an anonymous pid) on this node; messages sent to the name
// or to the mailbox's pid arrive on its channel.
func (n *Node) Register(name string) (*Mailbox, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.closed {
		return nil, ErrClosed
	}
	a := Atom(name)
	if _, taken := n.names[a]; taken || builtin(a) {
		return nil, fmt.Errorf("erldist: register %s: %w", name, ErrNameTaken)
	}
	id := n.nextPid
	n.nextPid++
	m := &Mailbox{n: n, name: a, pid: Pid{Node: n.name, ID: id & 0x7fff, Serial: id >> 15, Creation: n.creation},
		c: make(chan Message, n.cfg.MailboxSize), links: map[Pid]struct{}{}, monitors: map[string]monitor{}}
	if name != "" {
		n.names[a] = m
	}
	n.pids[id] = m
	return m, nil
}

// C is the channel of incoming messages; it is closed by Mailbox.Close and Node.Close.
func (m *Mailbox) C() <-chan Message { return m.c }

// Pid is the mailbox's process identifier.
func (m *Mailbox) Pid() Pid { return m.pid }

// Name is the registered name ("" for an anonymous mailbox).
func (m *Mailbox) Name() string { return string(m.name) }

// Close unregisters the mailbox and tells linked and monitoring processes (reason normal).
func (m *Mailbox) Close() error {
	n := m.n
	n.mu.Lock()
	id := m.pid.ID | m.pid.Serial<<15
	if n.pids[id] != m {
		n.mu.Unlock()
		return nil
	}
	delete(n.pids, id)
	if m.name != "" {
		delete(n.names, m.name)
	}
	close(m.c)
	n.mu.Unlock()
	m.mu.Lock()
	links, mons := m.links, m.monitors
	m.links, m.monitors = map[Pid]struct{}{}, map[string]monitor{}
	m.mu.Unlock()
	for p := range links {
		if c := n.connTo(p.Node); c != nil {
			c.sendCtl(Tuple{int64(opExit), m.pid, p, Atom("normal")}, nil, false)
		}
	}
	for _, mon := range mons {
		if c := n.connTo(mon.by.Node); c != nil {
			var from Term = m.pid
			if mon.byName {
				from = m.name
			}
			c.sendCtl(Tuple{int64(opMonitorPExit), from, mon.by, mon.ref, Atom("normal")}, nil, false)
		}
	}
	return nil
}

func (m *Mailbox) forgetNode(node Atom) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for p := range m.links {
		if p.Node == node {
			delete(m.links, p)
		}
	}
	for k, mon := range m.monitors {
		if mon.by.Node == node {
			delete(m.monitors, k)
		}
	}
}

// Send sends msg from this mailbox's pid; to is a Pid or a Name.
func (m *Mailbox) Send(ctx context.Context, to any, msg Term) error {
	return m.n.send(ctx, m.pid, to, msg)
}

// Reply answers the gen_server:call that delivered msg.
func (m *Mailbox) Reply(ctx context.Context, msg Message, reply Term) error {
	if msg.Call == nil {
		return errors.New("erldist: reply to a message that is not a call")
	}
	return m.n.reply(ctx, m.pid, *msg.Call, reply)
}

// Name addresses a registered process on a node.
type Name struct {
	Node string
	Name string
}

// Send sends msg from the node's own pid; to is a Pid or a Name. The node must be connected
// (see Connect); a Name on a node not connected is connected first.
func (n *Node) Send(ctx context.Context, to any, msg Term) error {
	return n.send(ctx, n.self, to, msg)
}

func (n *Node) connTo(node Atom) *conn {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.conns[node]
}

func (n *Node) send(ctx context.Context, from Pid, to any, msg Term) error {
	var node Atom
	var ctl Tuple
	switch t := to.(type) {
	case Pid:
		node = t.Node
	case *Pid:
		node, to = t.Node, *t
	case Name:
		node = Atom(t.Node)
		ctl = Tuple{int64(opRegSend), from, Atom(""), Atom(t.Name)}
	default:
		return fmt.Errorf("erldist: send to %T: want Pid or Name", to)
	}
	c := n.connTo(node)
	if c == nil {
		if err := n.Connect(ctx, string(node)); err != nil {
			return err
		}
		if c = n.connTo(node); c == nil {
			return fmt.Errorf("erldist: send to %s: %w", node, ErrNotUp)
		}
	}
	if ctl == nil {
		if c.flags&flagSendSender != 0 {
			ctl = Tuple{int64(opSendSender), from, to}
		} else {
			ctl = Tuple{int64(opSend), Atom(""), to}
		}
	}
	p, err := encodeFrame(ctl, msg, true)
	if err != nil {
		return err
	}
	return c.send(ctx, p)
}

func (n *Node) reply(ctx context.Context, from Pid, f From, reply Term) error {
	msg := Tuple{f.Tag, reply}
	c := n.connTo(f.Pid.Node)
	if c == nil {
		return fmt.Errorf("erldist: reply to %s: %w", f.Pid.Node, ErrNotUp)
	}
	// gen:reply sends to the alias of a [alias|Ref] tag when the caller made one (OTP 24+).
	if il, ok := f.Tag.(ImproperList); ok && len(il.Elems) == 1 && il.Elems[0] == Atom("alias") && c.flags&flagAlias != 0 {
		if ref, ok := il.Tail.(Ref); ok {
			p, err := encodeFrame(Tuple{int64(opAliasSend), from, ref}, msg, true)
			if err != nil {
				return err
			}
			return c.send(ctx, p)
		}
	}
	return n.send(ctx, from, f.Pid, msg)
}

func encodeFrame(ctl Tuple, msg Term, withMsg bool) ([]byte, error) {
	p, err := AppendEncode([]byte{passThrough}, ctl)
	if err != nil {
		return nil, err
	}
	if withMsg {
		if p, err = AppendEncode(p, msg); err != nil {
			return nil, err
		}
	}
	return p, nil
}

// sendCtl queues a control message without blocking the reader (dropped if the queue is full).
func (c *conn) sendCtl(ctl Tuple, msg Term, withMsg bool) {
	p, err := encodeFrame(ctl, msg, withMsg)
	if err != nil {
		c.n.log.Warn("erldist: encode control message", "err", err)
		return
	}
	select {
	case c.out <- p:
	case <-c.done:
	default:
		c.n.log.Warn("erldist: outgoing queue full, control message dropped", "peer", c.peer)
	}
}

func builtin(a Atom) bool {
	return a == "net_kernel" || a == "rex" || a == "global_name_server"
}

func (n *Node) mailboxByName(a Atom) *Mailbox {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.names[a]
}

func (n *Node) mailboxByPid(p Pid) *Mailbox {
	if p.Node != n.name || p.Creation != n.creation { // a pid of an earlier incarnation is dead
		return nil
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.pids[p.ID|p.Serial<<15]
}

func (n *Node) deliver(m *Mailbox, msg Message) {
	if m == nil {
		n.dropped.Add(1)
		n.log.Debug("erldist: message for no mailbox dropped", "peer", msg.Node, "from", msg.From, "term", msg.Term)
		return
	}
	if t, ok := msg.Term.(Tuple); ok && !msg.Exit && len(t) == 3 && t[0] == Atom("$gen_call") {
		if f, ok := t[1].(Tuple); ok && len(f) == 2 {
			if pid, ok := f[0].(Pid); ok {
				msg.Call = &From{Pid: pid, Tag: f[1]}
				msg.From = pid
				msg.Term = t[2]
			}
		}
	}
	n.mu.Lock() // the channel is closed under n.mu
	defer n.mu.Unlock()
	if n.pids[m.pid.ID|m.pid.Serial<<15] != m {
		n.dropped.Add(1)
		return
	}
	select {
	case m.c <- msg:
	default:
		n.dropped.Add(1)
		n.log.Warn("erldist: mailbox full, message dropped", "name", m.name)
	}
}

func asInt(t Term) (int64, bool) { v, ok := t.(int64); return v, ok }

// dispatch handles one distribution message from c.
func (n *Node) dispatch(c *conn, b []byte) error {
	if b[0] != passThrough {
		return fmt.Errorf("%w: message type %d (no distribution header expected)", ErrTerm, b[0])
	}
	ctlT, rest, err := DecodePrefix(b[1:])
	if err != nil {
		return err
	}
	ctl, ok := ctlT.(Tuple)
	if !ok || len(ctl) < 1 {
		return fmt.Errorf("%w: control message is not a tuple", ErrTerm)
	}
	op, _ := asInt(ctl[0])
	var msg Term
	if len(rest) > 0 {
		if msg, err = Decode(rest); err != nil {
			return err
		}
	}
	arg := func(i int) Term {
		if i < len(ctl) {
			return ctl[i]
		}
		return nil
	}
	pidArg := func(i int) Pid { p, _ := arg(i).(Pid); return p }
	switch op {
	case opSend, opSendTT:
		if to, ok := arg(2).(Pid); ok {
			n.deliver(n.mailboxByPid(to), Message{Node: string(c.peer), Term: msg})
		}
	case opSendSender, opSendSenderTT:
		if to, ok := arg(2).(Pid); ok {
			n.deliver(n.mailboxByPid(to), Message{Node: string(c.peer), From: pidArg(1), Term: msg})
		}
	case opRegSend, opRegSendTT:
		name, _ := arg(3).(Atom)
		from := pidArg(1)
		if builtin(name) {
			n.builtin(c, name, from, msg)
			return nil
		}
		n.deliver(n.mailboxByName(name), Message{Node: string(c.peer), From: from, Term: msg})
	case opAliasSend, opAliasSendTT:
		n.dropped.Add(1) // this node makes no aliases
		n.log.Debug("erldist: alias message dropped", "peer", c.peer, "alias", arg(2), "term", msg)
	case opLink:
		from, to := pidArg(1), pidArg(2)
		if m := n.mailboxByPid(to); m != nil {
			m.mu.Lock()
			m.links[from] = struct{}{}
			m.mu.Unlock()
		} else {
			c.sendCtl(Tuple{int64(opExit), to, from, Atom("noproc")}, nil, false)
		}
	case opUnlink:
		if m := n.mailboxByPid(pidArg(2)); m != nil {
			m.mu.Lock()
			delete(m.links, pidArg(1))
			m.mu.Unlock()
		}
	case opUnlinkID:
		from, to := pidArg(2), pidArg(3)
		if m := n.mailboxByPid(to); m != nil {
			m.mu.Lock()
			delete(m.links, from)
			m.mu.Unlock()
		}
		c.sendCtl(Tuple{int64(opUnlinkIDAck), arg(1), to, from}, nil, false)
	case opExit, opExitTT, opExit2, opExit2TT:
		n.exitSignal(c, pidArg(1), pidArg(2), arg(3))
	case opPayloadExit, opPayloadExitTT, opPayloadExit2, opPayloadExit2TT:
		n.exitSignal(c, pidArg(1), pidArg(2), msg)
	case opMonitorP:
		from, ref := pidArg(1), arg(3)
		r, _ := ref.(Ref)
		var m *Mailbox
		switch to := arg(2).(type) {
		case Atom:
			if builtin(to) {
				return nil // the node's own services never go down while the link is up
			}
			m = n.mailboxByName(to)
		case Pid:
			m = n.mailboxByPid(to)
		}
		if m == nil {
			c.sendCtl(Tuple{int64(opMonitorPExit), arg(2), from, ref, Atom("noproc")}, nil, false)
			return nil
		}
		m.mu.Lock()
		_, byName := arg(2).(Atom)
		m.monitors[r.String()] = monitor{by: from, ref: r, byName: byName}
		m.mu.Unlock()
	case opDemonitorP:
		r, _ := arg(3).(Ref)
		var m *Mailbox
		switch to := arg(2).(type) {
		case Atom:
			m = n.mailboxByName(to)
		case Pid:
			m = n.mailboxByPid(to)
		}
		if m != nil {
			m.mu.Lock()
			delete(m.monitors, r.String())
			m.mu.Unlock()
		}
	case opMonitorPExit, opPayloadMonitorExt:
		// {21, FromProc, ToPid, Ref, Reason} or {28, FromProc, ToPid, Ref} + Reason: a monitor a
		// mailbox (Node.Call) set fired; delivered as Erlang's {'DOWN', Ref, process, Proc, Reason}.
		reason := arg(4)
		if op == opPayloadMonitorExt {
			reason = msg
		}
		n.deliver(n.mailboxByPid(pidArg(2)), Message{Node: string(c.peer),
			Term: Tuple{Atom("DOWN"), arg(3), Atom("process"), arg(1), reason}})
	case opUnlinkIDAck, opGroupLeader:
		// links are only made by peers; group leaders mean nothing here
	default:
		n.log.Debug("erldist: control message ignored", "peer", c.peer, "op", op)
	}
	return nil
}

func (n *Node) exitSignal(c *conn, from, to Pid, reason Term) {
	m := n.mailboxByPid(to)
	if m == nil {
		return
	}
	m.mu.Lock()
	delete(m.links, from)
	m.mu.Unlock()
	n.deliver(m, Message{Node: string(c.peer), From: from, Term: reason, Exit: true})
}

// builtin answers what every Erlang node expects of net_kernel, rex and global_name_server.
func (n *Node) builtin(c *conn, name Atom, from Pid, msg Term) {
	t, _ := msg.(Tuple)
	switch name {
	case "net_kernel":
		// net_adm:ping: {'$gen_call', From, {is_auth, Node}} -> yes
		if len(t) == 3 && t[0] == Atom("$gen_call") {
			if f, ok := t[1].(Tuple); ok && len(f) == 2 {
				if pid, ok := f[0].(Pid); ok {
					var answer Term = Atom("yes")
					if req, ok := t[2].(Tuple); !ok || len(req) < 1 || req[0] != Atom("is_auth") {
						answer = Atom("ignored")
					}
					n.replyAsync(c, From{Pid: pid, Tag: f[1]}, answer)
				}
			}
		}
	case "rex":
		// OTP 23+ rpc asks a new node which features it has: {From, features_request}.
		if len(t) == 2 && t[1] == Atom("features_request") {
			if pid, ok := t[0].(Pid); ok {
				// No erpc: it needs spawn requests (DFLAG_SPAWN), which this node does not serve.
				c.sendCtl(Tuple{int64(opSendSender), n.self, pid}, Tuple{Atom("features_reply"), n.name, List{}}, true)
			}
			return
		}
		if len(t) == 3 && t[0] == Atom("$gen_call") {
			if f, ok := t[1].(Tuple); ok && len(f) == 2 {
				if pid, ok := f[0].(Pid); ok {
					n.replyAsync(c, From{Pid: pid, Tag: f[1]}, Tuple{Atom("badrpc"), Atom("notsup")})
				}
			}
		}
	case "global_name_server":
		if t == nil {
			return
		}
		n.global(c, from, t)
	}
}

func (n *Node) replyAsync(c *conn, f From, reply Term) {
	msg := Tuple{f.Tag, reply}
	if il, ok := f.Tag.(ImproperList); ok && len(il.Elems) == 1 && il.Elems[0] == Atom("alias") && c.flags&flagAlias != 0 {
		if ref, ok := il.Tail.(Ref); ok {
			c.sendCtl(Tuple{int64(opAliasSend), n.self, ref}, msg, true)
			return
		}
	}
	c.sendCtl(Tuple{int64(opSendSender), n.self, f.Pid}, msg, true)
}

// global answers the peer's global_name_server (kernel's global, protocol version 8 as in
// OTP 25-27) so that global:sync() on the Erlang side completes. This node registers no global
// names and takes no global locks itself; it only plays the passive half of global's sync:
//
//	peer: {init_connect, {8, HisTag}, Peer, {locker, _, _, HisLocker}}  -> the same with our tag
//	peer: {set_lock, Id} / {del_lock, Id} calls                         -> true
//	peer: {lock_set, Locker, true, Known, OurTag}                       -> {lock_set, ourLocker, true, [], HisTag}
//	peer: {exchange, Peer, Names, _, OurTag}                            -> {exchange, us, [], [], HisTag}
//	peer: {resolved, Peer, _, _, _, _, OurTag}                          -> {resolved, us, [], [], unused, [], HisTag}
//	peer: {in_sync, Peer, true}                                         -> {in_sync, us, true} (once)
//
// Everything else (init_connect_ack, in_sync, new_nodes, cancel_connect, lost_connection) is
// ignored. Only the connection's reader goroutine touches c.global.
func (n *Node) global(c *conn, from Pid, t Tuple) {
	if len(t) == 3 && t[0] == Atom("$gen_call") { // set_lock, del_lock: always granted
		f, ok := t[1].(Tuple)
		req, _ := t[2].(Tuple)
		if ok && len(f) == 2 && len(req) == 2 && (req[0] == Atom("set_lock") || req[0] == Atom("del_lock")) {
			if pid, ok := f[0].(Pid); ok {
				n.replyAsync(c, From{Pid: pid, Tag: f[1]}, Atom("true"))
			}
		}
		return
	}
	if len(t) != 2 || t[0] != Atom("$gen_cast") {
		return
	}
	msg, _ := t[1].(Tuple)
	if len(msg) == 0 {
		return
	}
	cast := func(m Tuple) {
		c.sendCtl(Tuple{int64(opRegSend), n.locker(), Atom(""), Atom("global_name_server")},
			Tuple{Atom("$gen_cast"), m}, true)
	}
	switch msg[0] {
	case Atom("init_connect"):
		if len(msg) != 4 {
			return
		}
		vsn, ok := msg[1].(Tuple)
		if !ok || len(vsn) < 2 {
			return
		}
		c.global.hisTag = vsn[1]
		if c.global.myTag == nil {
			c.global.myTag = int64(n.nextTag.Add(1))
		}
		cast(Tuple{Atom("init_connect"), Tuple{int64(8), c.global.myTag}, n.name,
			Tuple{Atom("locker"), Atom("no_longer_a_pid"), List{}, n.locker()}})
	case Atom("lock_set"):
		if len(msg) == 5 && msg[2] == Atom("true") && c.global.hisTag != nil && Equal(msg[4], c.global.myTag) {
			cast(Tuple{Atom("lock_set"), n.locker(), Atom("true"), List{}, c.global.hisTag})
		}
	case Atom("exchange"):
		if len(msg) == 5 && c.global.hisTag != nil && Equal(msg[4], c.global.myTag) {
			cast(Tuple{Atom("exchange"), n.name, List{}, List{}, c.global.hisTag})
		}
	case Atom("resolved"):
		if len(msg) == 7 && c.global.hisTag != nil && Equal(msg[6], c.global.myTag) {
			cast(Tuple{Atom("resolved"), n.name, List{}, List{}, Atom("unused"), List{}, c.global.hisTag})
		}
	case Atom("in_sync"):
		// The peer learnt of this node through a third node and considers it synced (its
		// sync_others); a global node answers with its own in_sync when it learns of the peer
		// the same way. Answer once per connection, so that global:sync() on the peer returns.
		if len(msg) == 3 && msg[1] == c.peer && !c.global.inSyncSent {
			c.global.inSyncSent = true
			cast(Tuple{Atom("in_sync"), n.name, Atom("true")})
		}
	default:
		n.log.Debug("erldist: global message ignored", "peer", c.peer, "msg", msg[0])
	}
}

// locker is the pid this node gives global as its locker process (no mailbox behind it).
func (n *Node) locker() Pid { return Pid{Node: n.name, ID: 1, Creation: n.creation} }

// ErrCallFailed is returned (wrapped) by Call when the callee exits or does not exist.
var ErrCallFailed = errors.New("erldist: call failed")

// Call makes a gen_server:call to a process on a connected (or connectable) node: to is a Name
// or a Pid. Like gen:call it monitors the callee, so a missing or dying process fails the call
// at once (ErrCallFailed with the exit reason, e.g. noproc), as does the link going down.
// ctx bounds the wait (gen_server's default is 5 s).
func (n *Node) Call(ctx context.Context, to any, req Term) (Term, error) {
	var node Atom
	var proc Term
	switch t := to.(type) {
	case Name:
		node, proc = Atom(t.Node), Tuple{Atom(t.Name), Atom(t.Node)}
	case Pid:
		node, proc = t.Node, t
	default:
		return nil, fmt.Errorf("erldist: call %T: want Pid or Name", to)
	}
	if n.connTo(node) == nil {
		if err := n.Connect(ctx, string(node)); err != nil {
			return nil, err
		}
	}
	c := n.connTo(node)
	if c == nil {
		return nil, fmt.Errorf("erldist: call %v: %w", to, ErrNotUp)
	}
	m, err := n.Register("")
	if err != nil {
		return nil, err
	}
	defer m.Close()
	ref := n.MakeRef()
	target := proc
	if nm, ok := proc.(Tuple); ok {
		target = nm[0] // MONITOR_P names a registered process by its atom
	}
	mon, err := encodeFrame(Tuple{int64(opMonitorP), m.pid, target, ref}, nil, false)
	if err != nil {
		return nil, err
	}
	if err := c.send(ctx, mon); err != nil {
		return nil, err
	}
	if err := n.send(ctx, m.pid, to, Tuple{Atom("$gen_call"), Tuple{m.pid, ref}, req}); err != nil {
		return nil, err
	}
	demonitor := func() {
		if p, err := encodeFrame(Tuple{int64(opDemonitorP), m.pid, target, ref}, nil, false); err == nil {
			c.enqueue(p)
		}
	}
	for {
		select {
		case msg, ok := <-m.C():
			if !ok {
				return nil, ErrClosed
			}
			t, _ := msg.Term.(Tuple)
			if len(t) == 2 && Equal(t[0], ref) {
				demonitor()
				return t[1], nil
			}
			if len(t) == 5 && t[0] == Atom("DOWN") && Equal(t[1], ref) {
				return nil, fmt.Errorf("%w: %v: %v", ErrCallFailed, to, t[4])
			}
		case <-c.done:
			return nil, fmt.Errorf("%w: %v: noconnection", ErrCallFailed, to)
		case <-ctx.Done():
			demonitor()
			return nil, fmt.Errorf("erldist: call %v: %w", to, ctx.Err())
		}
	}
}
