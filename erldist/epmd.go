package erldist

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strconv"
	"sync"
	"time"
)

// EPMD request and response codes (erts "Distribution Protocol", section EPMD).
const (
	epmdAlive2Req     = 120
	epmdAlive2Resp    = 121
	epmdAlive2XResp   = 118
	epmdPortPlease2   = 122
	epmdPort2Resp     = 119
	epmdNamesReq      = 110
	nodeTypeNormal    = 77 // 'M'
	protocolTCP       = 0
	distVersion       = 6
	epmdMaxRequest    = 1024
	epmdDefaultPort   = 4369
	epmdRequestTimout = 5 * time.Second
	// nameTakenRetry bounds the retries of a registration refused because
	// the name is still registered (see errNameTaken).
	nameTakenRetry = 3 * time.Second
)

// ErrNoNode is returned when EPMD does not know the node.
var ErrNoNode = errors.New("erldist: node not registered with epmd")

// NodeInfo is what EPMD knows of a node.
type NodeInfo struct {
	Name        string // alive name, the part before '@'
	Port        int
	NodeType    uint8
	Protocol    uint8
	HighVersion uint16
	LowVersion  uint16
	Extra       []byte
}

func epmdAddr(host string, port int) string {
	if port == 0 {
		port = epmdDefaultPort
	}
	return net.JoinHostPort(host, strconv.Itoa(port))
}

func writeEPMD(w io.Writer, req []byte) error {
	b := binary.BigEndian.AppendUint16(nil, uint16(len(req)))
	_, err := w.Write(append(b, req...))
	return err
}

// LookupPort asks the EPMD at host:epmdPort (0 = 4369) for the distribution port of alive name.
func LookupPort(ctx context.Context, host string, epmdPort int, name string) (NodeInfo, error) {
	var dl net.Dialer
	c, err := dl.DialContext(ctx, "tcp", epmdAddr(host, epmdPort))
	if err != nil {
		return NodeInfo{}, fmt.Errorf("erldist: epmd lookup %s: %w", name, err)
	}
	defer c.Close()
	if d, ok := ctx.Deadline(); ok {
		c.SetDeadline(d)
	} else {
		c.SetDeadline(time.Now().Add(epmdRequestTimout))
	}
	if err := writeEPMD(c, append([]byte{epmdPortPlease2}, name...)); err != nil {
		return NodeInfo{}, fmt.Errorf("erldist: epmd lookup %s: %w", name, err)
	}
	r := bufio.NewReader(c)
	var hdr [2]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return NodeInfo{}, fmt.Errorf("erldist: epmd lookup %s: %w", name, err)
	}
	if hdr[0] != epmdPort2Resp {
		return NodeInfo{}, fmt.Errorf("erldist: epmd lookup %s: unexpected response %d", name, hdr[0])
	}
	if hdr[1] != 0 {
		return NodeInfo{}, fmt.Errorf("erldist: epmd lookup %s: %w", name, ErrNoNode)
	}
	var fix [10]byte
	if _, err := io.ReadFull(r, fix[:]); err != nil {
		return NodeInfo{}, fmt.Errorf("erldist: epmd lookup %s: %w", name, err)
	}
	info := NodeInfo{
		Port:        int(binary.BigEndian.Uint16(fix[0:])),
		NodeType:    fix[2],
		Protocol:    fix[3],
		HighVersion: binary.BigEndian.Uint16(fix[4:]),
		LowVersion:  binary.BigEndian.Uint16(fix[6:]),
	}
	nl := binary.BigEndian.Uint16(fix[8:])
	if nl == 0 || nl > 1020 { // an alive name is an atom: at most 255 characters, 4 bytes each
		return NodeInfo{}, fmt.Errorf("erldist: epmd lookup %s: bad name length %d", name, nl)
	}
	nb := make([]byte, nl)
	if _, err := io.ReadFull(r, nb); err != nil {
		return NodeInfo{}, fmt.Errorf("erldist: epmd lookup %s: %w", name, err)
	}
	info.Name = string(nb)
	return info, nil
}

func alive2Request(name string, port int) []byte {
	req := []byte{epmdAlive2Req}
	req = binary.BigEndian.AppendUint16(req, uint16(port))
	req = append(req, nodeTypeNormal, protocolTCP)
	req = binary.BigEndian.AppendUint16(req, distVersion)
	req = binary.BigEndian.AppendUint16(req, distVersion)
	req = binary.BigEndian.AppendUint16(req, uint16(len(name)))
	req = append(req, name...)
	return binary.BigEndian.AppendUint16(req, 0) // no extra
}

// errNameTaken: epmd refused a registration, normally because the name is
// registered (perhaps by a process that just exited: epmd notices its closed
// connection a moment later).
var errNameTaken = errors.New("name taken")

// register sends ALIVE2 to the EPMD and returns the open connection (closing it unregisters)
// and the creation EPMD assigned.
func register(ctx context.Context, addr, name string, port int) (net.Conn, uint32, error) {
	var dl net.Dialer
	c, err := dl.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, 0, err
	}
	c.SetDeadline(time.Now().Add(epmdRequestTimout))
	if err := writeEPMD(c, alive2Request(name, port)); err != nil {
		c.Close()
		return nil, 0, err
	}
	var hdr [2]byte
	if _, err := io.ReadFull(c, hdr[:]); err != nil {
		c.Close()
		return nil, 0, err
	}
	var creation uint32
	switch hdr[0] {
	case epmdAlive2XResp:
		var b [4]byte
		_, err = io.ReadFull(c, b[:])
		creation = binary.BigEndian.Uint32(b[:])
	case epmdAlive2Resp:
		var b [2]byte
		_, err = io.ReadFull(c, b[:])
		creation = uint32(binary.BigEndian.Uint16(b[:]))
	default:
		err = fmt.Errorf("unexpected response %d", hdr[0])
	}
	if err == nil && hdr[1] != 0 {
		err = fmt.Errorf("%w: epmd refused ALIVE2 (result %d; is the name %q taken?)", errNameTaken, hdr[1], name)
	}
	if err != nil {
		c.Close()
		return nil, 0, err
	}
	c.SetDeadline(time.Time{})
	return c, creation, nil
}

// EPMD is a minimal embedded port mapper: it answers ALIVE2, PORT_PLEASE2 and NAMES on one
// listener, for hosts where no epmd runs. A registration lives as long as its TCP connection.
type EPMD struct {
	ln     net.Listener
	log    *slog.Logger
	mu     sync.Mutex
	nodes  map[string]NodeInfo
	conns  map[net.Conn]struct{}
	closed bool
	next   uint32
	wg     sync.WaitGroup
}

// maxEPMDNodes bounds the registration table.
const maxEPMDNodes = 1024

// ListenEPMD starts an embedded EPMD on addr (for example "127.0.0.1:4369"; port 0 picks one).
func ListenEPMD(addr string, log *slog.Logger) (*EPMD, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("erldist: epmd listen %s: %w", addr, err)
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	e := &EPMD{ln: ln, log: log, nodes: map[string]NodeInfo{}, conns: map[net.Conn]struct{}{}, next: uint32(time.Now().UnixNano()%1000) + 1}
	e.wg.Add(1)
	go e.accept()
	return e, nil
}

// Port is the TCP port the embedded EPMD listens on.
func (e *EPMD) Port() int { return e.ln.Addr().(*net.TCPAddr).Port }

// Close stops the listener, drops every registration and waits for its goroutines. Idempotent.
func (e *EPMD) Close() error {
	e.mu.Lock()
	if !e.closed {
		e.closed = true
		e.ln.Close()
		for c := range e.conns {
			c.Close()
		}
	}
	e.mu.Unlock()
	e.wg.Wait()
	return nil
}

func (e *EPMD) accept() {
	defer e.wg.Done()
	for {
		c, err := e.ln.Accept()
		if err != nil {
			return
		}
		e.mu.Lock()
		if e.closed || len(e.conns) >= 4*maxEPMDNodes {
			e.mu.Unlock()
			c.Close()
			continue
		}
		e.conns[c] = struct{}{}
		e.wg.Add(1)
		e.mu.Unlock()
		go e.serve(c)
	}
}

func (e *EPMD) serve(c net.Conn) {
	defer e.wg.Done()
	defer func() {
		e.mu.Lock()
		delete(e.conns, c)
		e.mu.Unlock()
		c.Close()
	}()
	c.SetReadDeadline(time.Now().Add(epmdRequestTimout))
	var hdr [2]byte
	if _, err := io.ReadFull(c, hdr[:]); err != nil {
		return
	}
	n := int(binary.BigEndian.Uint16(hdr[:]))
	if n == 0 || n > epmdMaxRequest {
		return
	}
	req := make([]byte, n)
	if _, err := io.ReadFull(c, req); err != nil {
		return
	}
	switch req[0] {
	case epmdPortPlease2:
		e.mu.Lock()
		info, ok := e.nodes[string(req[1:])]
		e.mu.Unlock()
		if !ok {
			c.Write([]byte{epmdPort2Resp, 1})
			return
		}
		resp := []byte{epmdPort2Resp, 0}
		resp = binary.BigEndian.AppendUint16(resp, uint16(info.Port))
		resp = append(resp, info.NodeType, info.Protocol)
		resp = binary.BigEndian.AppendUint16(resp, info.HighVersion)
		resp = binary.BigEndian.AppendUint16(resp, info.LowVersion)
		resp = binary.BigEndian.AppendUint16(resp, uint16(len(info.Name)))
		resp = append(resp, info.Name...)
		resp = binary.BigEndian.AppendUint16(resp, uint16(len(info.Extra)))
		c.Write(append(resp, info.Extra...))
	case epmdNamesReq:
		resp := binary.BigEndian.AppendUint32(nil, uint32(e.Port()))
		e.mu.Lock()
		for _, info := range e.nodes {
			resp = fmt.Appendf(resp, "name %s at port %d\n", info.Name, info.Port)
		}
		e.mu.Unlock()
		c.Write(resp)
	case epmdAlive2Req:
		info, ok := parseAlive2(req)
		e.mu.Lock()
		_, taken := e.nodes[info.Name]
		if !ok || taken || len(e.nodes) >= maxEPMDNodes {
			e.mu.Unlock()
			c.Write([]byte{epmdAlive2XResp, 1, 0, 0, 0, 0})
			return
		}
		e.next++
		creation := e.next
		e.nodes[info.Name] = info
		e.mu.Unlock()
		e.log.Debug("epmd: registered", "name", info.Name, "port", info.Port)
		resp := binary.BigEndian.AppendUint32([]byte{epmdAlive2XResp, 0}, creation)
		if _, err := c.Write(resp); err == nil {
			c.SetReadDeadline(time.Time{})
			io.Copy(io.Discard, c) // the registration lives until the node closes the connection
		}
		e.mu.Lock()
		delete(e.nodes, info.Name)
		e.mu.Unlock()
		e.log.Debug("epmd: unregistered", "name", info.Name)
	}
}

func parseAlive2(req []byte) (NodeInfo, bool) {
	if len(req) < 13 {
		return NodeInfo{}, false
	}
	info := NodeInfo{
		Port:        int(binary.BigEndian.Uint16(req[1:])),
		NodeType:    req[3],
		Protocol:    req[4],
		HighVersion: binary.BigEndian.Uint16(req[5:]),
		LowVersion:  binary.BigEndian.Uint16(req[7:]),
	}
	nl := int(binary.BigEndian.Uint16(req[9:]))
	if nl == 0 || 11+nl+2 > len(req) {
		return NodeInfo{}, false
	}
	info.Name = string(req[11 : 11+nl])
	el := int(binary.BigEndian.Uint16(req[11+nl:]))
	if 13+nl+el > len(req) {
		return NodeInfo{}, false
	}
	info.Extra = append([]byte(nil), req[13+nl:13+nl+el]...)
	return info, true
}
