package erldist

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Errors of the Node, matched with errors.Is.
var (
	ErrClosed      = errors.New("erldist: node closed")
	ErrTickTimeout = errors.New("erldist: net_tick_timeout")
	ErrRestarted   = errors.New("erldist: peer restarted")
	ErrNotUp       = errors.New("erldist: node not connected")
	ErrNameTaken   = errors.New("erldist: name already registered")
	ErrConnClosed  = errors.New("erldist: connection closed")
	// ErrDisconnected is the NodeDown reason of a link closed by Disconnect.
	ErrDisconnected = errors.New("erldist: disconnected")
)

// Config configures a Node. Name and Cookie are required; every other zero value works.
type Config struct {
	// Name is the full node name, "go@127.0.0.1" (long names need a dot or ':' in the host part).
	Name string
	// Cookie is the shared secret of the Erlang cluster.
	Cookie string
	// Listen is the distribution TCP address; zero means the host part of Name, port 0.
	Listen string
	// EPMDPort is where EPMD listens, for registration and lookups; zero means 4369.
	EPMDPort int
	// NoEPMD skips registering with EPMD (peers then cannot find this node by name).
	NoEPMD bool
	// EmbeddedEPMD starts an embedded EPMD on 127.0.0.1:EPMDPort when none answers there.
	EmbeddedEPMD bool
	// TickTime is net_ticktime: a link silent this long is down, and ticks go out every
	// TickTime/4 when idle. Zero means 60 s, Erlang's default. Use the peers' value.
	TickTime time.Duration
	// SetupTime bounds one connection handshake (net_setuptime); zero means 7 s.
	SetupTime time.Duration
	// Hidden connects as a hidden node (not in the peers' nodes(), no nodeup for monitor_nodes).
	Hidden bool
	// MailboxSize is the channel capacity of each Mailbox; zero means 1024. A message for a full
	// mailbox is dropped and counted (the connection must keep reading to keep its ticks).
	MailboxSize int
	// MaxMessage bounds one distribution message; zero means 64 MiB.
	MaxMessage int
	// Logger receives logs; nil discards them.
	Logger *slog.Logger
	// OnNodeUp and OnNodeDown are called from one goroutine, in order, exactly once per link.
	OnNodeUp   func(node string)
	OnNodeDown func(node string, reason error)
}

// Node is a Go Erlang-distribution node.
type Node struct {
	cfg      Config
	name     Atom
	host     string
	creation uint32
	log      *slog.Logger
	ln       net.Listener
	epmd     *EPMD
	epmdConn net.Conn

	mu        sync.Mutex
	closed    bool
	conns     map[Atom]*conn
	dialing   map[Atom]*dialState
	changed   chan struct{} // closed and replaced on every change of conns
	names     map[Atom]*Mailbox
	pids      map[uint32]*Mailbox
	nextPid   uint32
	nextRef   uint64
	self      Pid
	events    []event
	eventSig  chan struct{}
	evStop    bool
	accepting int // handshakes in progress on accepted connections
	// acceptingFrom counts, per peer, accepted handshakes past the accept decision and not
	// yet up or failed: a link to that peer is on its way (see handshakeInitiator, "alive").
	acceptingFrom map[Atom]int

	dropped atomic.Uint64
	nextTag atomic.Uint64 // global sync tags
	ctx     context.Context
	cancel  context.CancelFunc
	wg      sync.WaitGroup
	evDone  chan struct{}
}

type dialState struct{ cancel func() }

type event struct {
	up     bool
	node   string
	reason error
}

// maxPendingAccepts bounds the handshakes in progress on accepted connections.
const maxPendingAccepts = 64

// Start validates cfg, listens, registers with EPMD and starts accepting connections.
func Start(ctx context.Context, cfg Config) (*Node, error) {
	alive, host, ok := strings.Cut(cfg.Name, "@")
	if !ok || alive == "" || host == "" {
		return nil, fmt.Errorf("erldist: node name %q is not name@host", cfg.Name)
	}
	if cfg.Cookie == "" {
		return nil, errors.New("erldist: empty cookie")
	}
	if cfg.TickTime <= 0 {
		cfg.TickTime = 60 * time.Second
	}
	if cfg.SetupTime <= 0 {
		cfg.SetupTime = 7 * time.Second
	}
	if cfg.MailboxSize <= 0 {
		cfg.MailboxSize = 1024
	}
	if cfg.MaxMessage <= 0 {
		cfg.MaxMessage = 64 << 20
	}
	if cfg.Listen == "" {
		cfg.Listen = net.JoinHostPort(host, "0")
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	n := &Node{
		cfg: cfg, name: Atom(cfg.Name), host: host, log: log.With("node", cfg.Name),
		conns: map[Atom]*conn{}, dialing: map[Atom]*dialState{}, acceptingFrom: map[Atom]int{}, changed: make(chan struct{}),
		names: map[Atom]*Mailbox{}, pids: map[uint32]*Mailbox{}, nextPid: 2, // 0: Self, 1: locker()
		eventSig: make(chan struct{}, 1), evDone: make(chan struct{}),
	}
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return nil, fmt.Errorf("erldist: listen %s: %w", cfg.Listen, err)
	}
	n.ln = ln
	n.creation = rand.Uint32N(1<<31) + 4 // 0..3 are the old 2-bit creations
	if !cfg.NoEPMD {
		addr := epmdAddr("127.0.0.1", cfg.EPMDPort)
		c, creation, err := register(ctx, addr, alive, n.Port())
		if err != nil && cfg.EmbeddedEPMD {
			var oe *net.OpError
			if errors.As(err, &oe) && oe.Op == "dial" {
				if n.epmd, err = ListenEPMD(addr, log); err == nil {
					c, creation, err = register(ctx, addr, alive, n.Port())
				}
			}
		}
		// A name still registered by a process that just exited is freed
		// when epmd sees that connection close: retry for a few seconds.
		for deadline := time.Now().Add(nameTakenRetry); errors.Is(err, errNameTaken) && time.Now().Before(deadline); {
			select {
			case <-ctx.Done():
			case <-time.After(100 * time.Millisecond):
				c, creation, err = register(ctx, addr, alive, n.Port())
				continue
			}
			break
		}
		if err != nil {
			ln.Close()
			if n.epmd != nil {
				n.epmd.Close()
			}
			return nil, fmt.Errorf("erldist: epmd register %s at %s: %w", alive, addr, err)
		}
		n.epmdConn, n.creation = c, creation
	}
	n.self = Pid{Node: n.name, ID: 0, Serial: 0, Creation: n.creation}
	n.ctx, n.cancel = context.WithCancel(context.Background())
	n.wg.Add(1)
	go n.acceptLoop()
	go n.eventLoop()
	n.log.Debug("erldist: started", "listen", ln.Addr().String(), "creation", n.creation)
	return n, nil
}

// Name is the node's full name.
func (n *Node) Name() string { return string(n.name) }

// Creation is the creation EPMD assigned (or a random one without EPMD).
func (n *Node) Creation() uint32 { return n.creation }

// Port is the distribution TCP port.
func (n *Node) Port() int { return n.ln.Addr().(*net.TCPAddr).Port }

// Self is the node's own pid, the sender of Node.Send.
func (n *Node) Self() Pid { return n.self }

// Dropped counts messages dropped because a mailbox was full or its name unknown.
func (n *Node) Dropped() uint64 { return n.dropped.Load() }

func (n *Node) flags() uint64 {
	if n.cfg.Hidden {
		return ourFlags
	}
	return ourFlags | flagPublished
}

// Nodes lists the connected nodes.
func (n *Node) Nodes() []string {
	n.mu.Lock()
	defer n.mu.Unlock()
	out := make([]string, 0, len(n.conns))
	for a := range n.conns {
		out = append(out, string(a))
	}
	return out
}

// MakeRef returns a new reference of this node.
func (n *Node) MakeRef() Ref {
	n.mu.Lock()
	n.nextRef++
	id := n.nextRef
	n.mu.Unlock()
	return Ref{Node: n.name, Creation: n.creation, IDs: []uint32{uint32(id & 0x3ffff), uint32(id >> 18), rand.Uint32()}}
}

// Close closes every link (NodeDown for each), unregisters and waits for all goroutines. Idempotent.
func (n *Node) Close() error {
	n.mu.Lock()
	if n.closed {
		n.mu.Unlock()
		<-n.evDone
		return nil
	}
	n.closed = true
	conns := make([]*conn, 0, len(n.conns))
	for _, c := range n.conns {
		conns = append(conns, c)
	}
	for _, d := range n.dialing {
		d.cancel()
	}
	n.mu.Unlock()
	n.cancel()
	n.ln.Close()
	for _, c := range conns {
		c.close(ErrClosed)
	}
	if n.epmdConn != nil {
		n.epmdConn.Close()
	}
	n.wg.Wait()
	if n.epmd != nil {
		n.epmd.Close()
	}
	n.mu.Lock()
	for _, m := range n.pids {
		close(m.c)
	}
	n.names, n.pids = map[Atom]*Mailbox{}, map[uint32]*Mailbox{}
	n.evStop = true
	n.mu.Unlock()
	n.signalEvents()
	<-n.evDone
	return nil
}

func (n *Node) acceptLoop() {
	defer n.wg.Done()
	for {
		c, err := n.ln.Accept()
		if err != nil {
			if n.ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return
			}
			// A transient failure (out of file descriptors): pause instead of spinning or
			// giving up the listener for good.
			n.log.Warn("erldist: accept", "err", err)
			select {
			case <-n.ctx.Done():
				return
			case <-time.After(50 * time.Millisecond):
			}
			continue
		}
		n.mu.Lock()
		if n.closed {
			n.mu.Unlock()
			c.Close()
			return
		}
		if n.accepting >= maxPendingAccepts { // a flood of idle connections costs bounded goroutines
			n.mu.Unlock()
			c.Close()
			continue
		}
		n.accepting++
		n.wg.Add(1)
		n.mu.Unlock()
		go func() {
			defer n.wg.Done()
			defer func() {
				n.mu.Lock()
				n.accepting--
				n.mu.Unlock()
			}()
			c.SetDeadline(time.Now().Add(n.cfg.SetupTime))
			stop := context.AfterFunc(n.ctx, func() { c.Close() })
			p, err := n.handshakeAcceptor(c)
			stop()
			if p.accepted {
				defer n.acceptDone(p.name) // after up: no moment with neither
			}
			if err != nil {
				n.log.Debug("erldist: incoming handshake failed", "peer", p.name, "err", err)
				c.Close()
				return
			}
			c.SetDeadline(time.Time{})
			n.up(c, p)
		}()
	}
}

// decideAccept applies the table to an incoming name: the simultaneous connect rule of the
// protocol (the initiator with the greater name wins, names compared literally). Every
// decision but a refusal counts the handshake in acceptingFrom until acceptDone.
func (n *Node) decideAccept(peer Atom) (d acceptDecision) {
	n.mu.Lock()
	defer n.mu.Unlock()
	defer func() {
		if d == acceptOK || d == acceptOKSimultaneous || d == acceptAlive {
			n.acceptingFrom[peer]++
		}
	}()
	if n.closed || peer == n.name {
		return acceptNotAllowed
	}
	if _, ok := n.conns[peer]; ok {
		return acceptAlive
	}
	if d, ok := n.dialing[peer]; ok {
		if string(peer) > string(n.name) {
			n.log.Debug(simultaneousMsg, "peer", peer, "winner", peer)
			d.cancel() // our own attempt gives way
			delete(n.dialing, peer)
			return acceptOKSimultaneous
		}
		n.log.Debug(simultaneousMsg, "peer", peer, "winner", n.name)
		return acceptNok
	}
	return acceptOK
}

// acceptDone ends what decideAccept counted for peer.
func (n *Node) acceptDone(peer Atom) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.acceptingFrom[peer]--; n.acceptingFrom[peer] <= 0 {
		delete(n.acceptingFrom, peer)
	}
}

// linkedOrAccepting reports whether a link to peer is up or an accepted handshake from it
// is on its way (OTP's is_pending, negated: our own attempt is no longer the one).
func (n *Node) linkedOrAccepting(peer Atom) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	_, up := n.conns[peer]
	return up || n.acceptingFrom[peer] > 0
}

// Connect connects to an Erlang node ("name@host"), returning once the link is up. Connecting
// to a node already connected returns nil at once.
func (n *Node) Connect(ctx context.Context, node string) error {
	peer := Atom(node)
	alive, host, ok := strings.Cut(node, "@")
	if !ok || alive == "" || host == "" {
		return fmt.Errorf("erldist: connect %q: not name@host", node)
	}
	if peer == n.name {
		return fmt.Errorf("erldist: connect %q: that is this node", node)
	}
	for {
		n.mu.Lock()
		if n.closed {
			n.mu.Unlock()
			return ErrClosed
		}
		if _, ok := n.conns[peer]; ok {
			n.mu.Unlock()
			return nil
		}
		changed := n.changed
		if _, busy := n.dialing[peer]; busy { // someone else dials: wait for the outcome
			n.mu.Unlock()
			select {
			case <-changed:
				continue
			case <-ctx.Done():
				return fmt.Errorf("erldist: connect %s: %w", node, ctx.Err())
			}
		}
		dctx, cancel := context.WithTimeout(ctx, n.cfg.SetupTime)
		d := &dialState{cancel: cancel}
		n.dialing[peer] = d
		n.mu.Unlock()

		err := n.dial(dctx, peer, alive, host)
		cancel()
		n.mu.Lock()
		if n.dialing[peer] == d {
			delete(n.dialing, peer)
		}
		n.broadcastLocked()
		_, isUp := n.conns[peer]
		n.mu.Unlock()
		if err == nil || isUp {
			return nil
		}
		if errors.Is(err, errSimultaneous) || (errors.Is(err, context.Canceled) && ctx.Err() == nil) {
			// The peer's attempt wins the tie: wait for it to come up.
			wait, wcancel := context.WithTimeout(ctx, n.cfg.SetupTime)
			err = n.waitUp(wait, peer)
			wcancel()
			if err == nil {
				return nil
			}
		}
		return fmt.Errorf("erldist: connect %s: %w", node, err)
	}
}

func (n *Node) waitUp(ctx context.Context, peer Atom) error {
	for {
		n.mu.Lock()
		_, ok := n.conns[peer]
		changed, closed := n.changed, n.closed
		n.mu.Unlock()
		if ok {
			return nil
		}
		if closed {
			return ErrClosed
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

func (n *Node) dial(ctx context.Context, peer Atom, alive, host string) error {
	info, err := LookupPort(ctx, host, n.cfg.EPMDPort, alive)
	if err != nil {
		return err
	}
	if info.HighVersion < distVersion {
		return fmt.Errorf("%w: peer speaks distribution version %d", ErrHandshake, info.HighVersion)
	}
	var dl net.Dialer
	c, err := dl.DialContext(ctx, "tcp", net.JoinHostPort(host, strconv.Itoa(info.Port)))
	if err != nil {
		return err
	}
	if d, ok := ctx.Deadline(); ok {
		c.SetDeadline(d)
	}
	stop := context.AfterFunc(ctx, func() { c.Close() })
	p, err := n.handshakeInitiator(c, peer)
	if !stop() && err == nil {
		err = ctx.Err()
	}
	if err != nil {
		c.Close()
		if ctx.Err() != nil && !errors.Is(err, errSimultaneous) {
			return ctx.Err()
		}
		return err
	}
	c.SetDeadline(time.Time{})
	n.up(c, p)
	return nil
}

func (n *Node) broadcastLocked() {
	close(n.changed)
	n.changed = make(chan struct{})
}

// up installs an authenticated connection, unless the node closed or a link to peer exists.
func (n *Node) up(nc net.Conn, p peerInfo) {
	c := &conn{n: n, peer: p.name, flags: p.flags, creation: p.creation, nc: nc,
		out: make(chan []byte, 256), done: make(chan struct{})}
	c.lastRecv.Store(time.Now().UnixNano())
	n.mu.Lock()
	if _, dup := n.conns[p.name]; dup || n.closed {
		n.mu.Unlock()
		nc.Close()
		return
	}
	n.conns[p.name] = c
	n.broadcastLocked()
	n.events = append(n.events, event{up: true, node: string(p.name)})
	n.wg.Add(2)
	n.mu.Unlock()
	n.signalEvents()
	n.log.Info("erldist: nodeup", "peer", p.name, "creation", p.creation)
	go c.readLoop()
	go c.writeLoop()
}

// Disconnect closes the link to node, if any (erlang:disconnect_node/1): OnNodeDown reports
// ErrDisconnected. It reports whether there was a link.
func (n *Node) Disconnect(node string) bool {
	n.mu.Lock()
	c := n.conns[Atom(node)]
	n.mu.Unlock()
	if c != nil {
		c.close(ErrDisconnected)
	}
	return c != nil
}

// dropConn closes the link to peer, if any (NodeDown with reason).
func (n *Node) dropConn(peer Atom, reason error) {
	n.mu.Lock()
	c := n.conns[peer]
	n.mu.Unlock()
	if c != nil {
		c.close(reason)
	}
}

// gone removes c from the table and emits NodeDown, once.
func (n *Node) gone(c *conn, reason error) {
	n.mu.Lock()
	if n.conns[c.peer] == c {
		delete(n.conns, c.peer)
		n.broadcastLocked()
		n.events = append(n.events, event{node: string(c.peer), reason: reason})
		for _, m := range n.pids {
			m.forgetNode(c.peer)
		}
	}
	n.mu.Unlock()
	n.signalEvents()
	n.log.Info("erldist: nodedown", "peer", c.peer, "reason", reason)
}

func (n *Node) signalEvents() {
	select {
	case n.eventSig <- struct{}{}:
	default:
	}
}

func (n *Node) eventLoop() {
	defer close(n.evDone)
	for {
		n.mu.Lock()
		evs, stop := n.events, n.evStop
		n.events = nil
		n.mu.Unlock()
		for _, e := range evs {
			if e.up && n.cfg.OnNodeUp != nil {
				n.cfg.OnNodeUp(e.node)
			} else if !e.up && n.cfg.OnNodeDown != nil {
				n.cfg.OnNodeDown(e.node, e.reason)
			}
		}
		if stop {
			if len(evs) == 0 {
				return
			}
			continue
		}
		<-n.eventSig
	}
}

// conn is one authenticated distribution link.
type conn struct {
	n        *Node
	peer     Atom
	flags    uint64
	creation uint32
	nc       net.Conn
	out      chan []byte
	done     chan struct{}
	once     sync.Once
	reason   error
	lastRecv atomic.Int64
	wrote    atomic.Bool

	global struct { // global's sync state; the reader goroutine only
		hisTag, myTag Term
		inSyncSent    bool
	}
}

func (c *conn) close(reason error) {
	c.once.Do(func() {
		c.reason = reason
		close(c.done)
		c.nc.Close()
		c.n.gone(c, reason)
	})
}

func (c *conn) readLoop() {
	defer c.n.wg.Done()
	r := bufio.NewReaderSize(c.nc, 64<<10)
	var hdr [4]byte
	for {
		if _, err := io.ReadFull(r, hdr[:]); err != nil {
			c.close(readReason(err))
			return
		}
		c.lastRecv.Store(time.Now().UnixNano())
		size := binary.BigEndian.Uint32(hdr[:])
		if size == 0 { // a tick: answer it if we sent nothing since the last one
			if !c.wrote.Swap(false) {
				c.enqueue(nil)
			}
			continue
		}
		if uint64(size) > uint64(c.n.cfg.MaxMessage) {
			c.close(fmt.Errorf("%w: message of %d bytes", ErrTerm, size))
			return
		}
		msg, err := io.ReadAll(io.LimitReader(r, int64(size))) // grows with the data received
		if err == nil && len(msg) != int(size) {
			err = io.ErrUnexpectedEOF
		}
		if err != nil {
			c.close(readReason(err))
			return
		}
		c.lastRecv.Store(time.Now().UnixNano())
		if err := c.n.dispatch(c, msg); err != nil {
			c.n.log.Warn("erldist: bad message, closing link", "peer", c.peer, "err", err)
			c.close(err)
			return
		}
	}
}

func readReason(err error) error {
	if errors.Is(err, net.ErrClosed) {
		return ErrConnClosed
	}
	return fmt.Errorf("%w: %v", ErrConnClosed, err)
}

// enqueue queues a frame payload (nil = tick) without blocking; false if the link is gone or full.
func (c *conn) enqueue(payload []byte) bool {
	select {
	case c.out <- payload:
		return true
	case <-c.done:
		return false
	default:
		return false
	}
}

// send queues a frame payload, waiting for room.
func (c *conn) send(ctx context.Context, payload []byte) error {
	select {
	case c.out <- payload:
		return nil
	case <-c.done:
		return fmt.Errorf("erldist: send to %s: %w", c.peer, ErrNotUp)
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (c *conn) writeLoop() {
	defer c.n.wg.Done()
	interval := c.n.cfg.TickTime / 4
	t := time.NewTicker(interval)
	defer t.Stop()
	w := bufio.NewWriterSize(c.nc, 64<<10)
	var sentSinceTick bool
	write := func(p []byte) error {
		var hdr [4]byte
		binary.BigEndian.PutUint32(hdr[:], uint32(len(p)))
		w.Write(hdr[:])
		w.Write(p)
		c.wrote.Store(true)
		sentSinceTick = true
		return nil
	}
	for {
		select {
		case <-c.done:
			return
		case p := <-c.out:
			write(p)
			for more := true; more; { // batch what is queued into one flush
				select {
				case p := <-c.out:
					write(p)
				default:
					more = false
				}
			}
			if err := w.Flush(); err != nil {
				c.close(fmt.Errorf("%w: %v", ErrConnClosed, err))
				return
			}
		case now := <-t.C:
			if now.UnixNano()-c.lastRecv.Load() > int64(c.n.cfg.TickTime) {
				c.close(ErrTickTimeout)
				return
			}
			if !sentSinceTick {
				write(nil)
				if err := w.Flush(); err != nil {
					c.close(fmt.Errorf("%w: %v", ErrConnClosed, err))
					return
				}
			}
			sentSinceTick = false
		}
	}
}
