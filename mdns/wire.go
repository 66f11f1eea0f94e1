package mdns

import (
	"errors"
	"fmt"
	"hash/fnv"
	"net/netip"
	"strings"

	"golang.org/x/net/dns/dnsmessage"
)

// Wire limits. A packet beyond them is cut short (questions, records) or
// dropped (size); nothing is allocated by a count the packet claims.
const (
	maxPacket    = 9000 // RFC 6762 §17: at most 9000 bytes
	maxQuestions = 64
	maxRecords   = 256
	sendLimit    = 1400 // stay below a 1500-byte MTU with headers
	flushBit     = 0x8000
	unicastBit   = 0x8000
	maxLabel     = 63
	domain       = "local."
	enumName     = "_services._dns-sd._udp.local."
)

// errMalformed is wrapped by every parse error.
var errMalformed = errors.New("mdns: malformed packet")

// question is one parsed question.
type question struct {
	Name    string // presentation form, as received
	Type    dnsmessage.Type
	Unicast bool // QU bit
}

// record is one parsed resource record of a type we use; others are skipped.
type record struct {
	Name   string // owner name, as received
	Type   dnsmessage.Type
	Flush  bool // cache-flush bit
	TTL    uint32
	Target string     // PTR and SRV
	Port   uint16     // SRV
	Text   []string   // TXT
	Addr   netip.Addr // A, AAAA
}

// message is a parsed mDNS message. For a query, Records are the known
// answers (answer section); for a response, the answer and additional
// sections (the authority section is skipped).
type message struct {
	ID        uint16
	Response  bool
	Truncated bool
	OpCode    dnsmessage.OpCode
	Questions []question
	Records   []record
	Skipped   int // records skipped because their name could not be read
}

// parseMessage parses an mDNS packet. Questions and records whose names
// cannot be read (labels containing '.', which dnsmessage refuses) or
// whose data is bad are skipped and counted in Skipped when the record
// length still allows stepping over them; any other defect is an error
// wrapping errMalformed.
func parseMessage(b []byte) (message, error) {
	var m message
	if len(b) > maxPacket {
		return m, fmt.Errorf("%w: %d bytes", errMalformed, len(b))
	}
	var p dnsmessage.Parser
	h, err := p.Start(b)
	if err != nil {
		return m, fmt.Errorf("%w: header: %v", errMalformed, err)
	}
	m.ID, m.Response, m.Truncated, m.OpCode = h.ID, h.Response, h.Truncated, h.OpCode
	for {
		q, err := p.Question()
		if errors.Is(err, dnsmessage.ErrSectionDone) {
			break
		}
		if err != nil {
			if p.SkipQuestion() != nil {
				return m, fmt.Errorf("%w: question: %v", errMalformed, err)
			}
			m.Skipped++
			continue
		}
		if len(m.Questions) < maxQuestions {
			m.Questions = append(m.Questions, question{
				Name:    q.Name.String(),
				Type:    q.Type,
				Unicast: uint16(q.Class)&unicastBit != 0,
			})
		}
	}
	if err := parseSection(&p, &m, p.AnswerHeader, p.SkipAnswer); err != nil {
		return m, err
	}
	if !m.Response {
		return m, nil // a query's authority section holds probe data, ignored
	}
	if err := p.SkipAllAuthorities(); err != nil {
		return m, fmt.Errorf("%w: authority: %v", errMalformed, err)
	}
	return m, parseSection(&p, &m, p.AdditionalHeader, p.SkipAdditional)
}

func parseSection(p *dnsmessage.Parser, m *message, header func() (dnsmessage.ResourceHeader, error), skip func() error) error {
	for {
		h, err := header()
		if errors.Is(err, dnsmessage.ErrSectionDone) {
			return nil
		}
		if err != nil {
			if skip() != nil {
				return fmt.Errorf("%w: record: %v", errMalformed, err)
			}
			m.Skipped++
			continue
		}
		if len(m.Records) >= maxRecords {
			if err := skip(); err != nil {
				return fmt.Errorf("%w: record: %v", errMalformed, err)
			}
			continue
		}
		r := record{Name: h.Name.String(), Type: h.Type, Flush: uint16(h.Class)&flushBit != 0, TTL: h.TTL}
		switch h.Type {
		case dnsmessage.TypePTR:
			rr, err := p.PTRResource()
			if err != nil {
				if skip() != nil {
					return fmt.Errorf("%w: PTR: %v", errMalformed, err)
				}
				m.Skipped++
				continue
			}
			r.Target = rr.PTR.String()
		case dnsmessage.TypeSRV:
			rr, err := p.SRVResource()
			if err != nil {
				if skip() != nil {
					return fmt.Errorf("%w: SRV: %v", errMalformed, err)
				}
				m.Skipped++
				continue
			}
			r.Target, r.Port = rr.Target.String(), rr.Port
		case dnsmessage.TypeTXT:
			rr, err := p.TXTResource()
			if err != nil {
				if skip() != nil {
					return fmt.Errorf("%w: TXT: %v", errMalformed, err)
				}
				m.Skipped++
				continue
			}
			r.Text = rr.TXT
		case dnsmessage.TypeA:
			rr, err := p.AResource()
			if err != nil {
				if skip() != nil {
					return fmt.Errorf("%w: A: %v", errMalformed, err)
				}
				m.Skipped++
				continue
			}
			r.Addr = netip.AddrFrom4(rr.A)
		case dnsmessage.TypeAAAA:
			rr, err := p.AAAAResource()
			if err != nil {
				if skip() != nil {
					return fmt.Errorf("%w: AAAA: %v", errMalformed, err)
				}
				m.Skipped++
				continue
			}
			r.Addr = netip.AddrFrom16(rr.AAAA)
		default:
			if err := skip(); err != nil {
				return fmt.Errorf("%w: record: %v", errMalformed, err)
			}
			continue
		}
		m.Records = append(m.Records, r)
	}
}

// txtNode reads the "node" and "v" keys of a TXT record (RFC 6763 §6:
// keys are case-insensitive, the first occurrence of a key wins).
func txtNode(text []string) (node, version string, hasNode, hasVersion bool) {
	for _, s := range text {
		k, v, _ := strings.Cut(s, "=")
		switch {
		case !hasNode && strings.EqualFold(k, "node"):
			node, hasNode = v, true
		case !hasVersion && strings.EqualFold(k, "v"):
			version, hasVersion = v, true
		}
	}
	return
}

// lower folds ASCII letters only (DNS names compare case-insensitively in
// ASCII; other bytes are kept as they are).
func lower(s string) string {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c >= 'A' && c <= 'Z' {
			b := []byte(s)
			for j := i; j < len(b); j++ {
				if c := b[j]; c >= 'A' && c <= 'Z' {
					b[j] = c + 'a' - 'A'
				}
			}
			return string(b)
		}
	}
	return s
}

// instanceLabel is the DNS-SD instance name for a node field: the node
// with '.' replaced by '-' (a label may hold dots per RFC 6763 §4.3, but
// many implementations, dnsmessage among them, mishandle them), cut to 63
// bytes with a hash of the whole node when longer. The label is only a
// unique display name; the node itself travels in the TXT record.
func instanceLabel(node string) string {
	return fitLabel(strings.ReplaceAll(node, ".", "-"), node)
}

// hostLabel is the SRV target host label for a node field: lower-case
// letters, digits and '-' only.
func hostLabel(node string) string {
	b := make([]byte, 0, len(node))
	dash := false
	for i := 0; i < len(node); i++ {
		c := node[i]
		switch {
		case c >= 'a' && c <= 'z', c >= '0' && c <= '9':
		case c >= 'A' && c <= 'Z':
			c += 'a' - 'A'
		default:
			c = '-'
		}
		if c == '-' && (dash || len(b) == 0) {
			continue
		}
		dash = c == '-'
		b = append(b, c)
	}
	s := strings.TrimRight(string(b), "-")
	if s == "" {
		s = "macula"
	}
	return fitLabel(s, node)
}

func fitLabel(label, node string) string {
	if len(label) <= maxLabel {
		return label
	}
	h := fnv.New32a()
	h.Write([]byte(node))
	return fmt.Sprintf("%s-%08x", label[:maxLabel-9], h.Sum32())
}

// rrKind names one of the records this node publishes.
type rrKind uint8

const (
	kindPTR  rrKind = iota // service -> instance (shared)
	kindSRV                // instance -> host:port (unique)
	kindTXT                // instance -> node=, v=1 (unique)
	kindA                  // host -> IPv4 (unique)
	kindAAAA               // host -> IPv6 (unique)
	kindEnum               // _services._dns-sd._udp -> service (shared)
	numKinds
)

// kinds is a small set of rrKind.
type kinds uint8

func (k kinds) has(x rrKind) bool { return k&(1<<x) != 0 }
func (k *kinds) add(x rrKind)     { *k |= 1 << x }

// ourRecords is what this node publishes.
type ourRecords struct {
	service  dnsmessage.Name // "_macula._tcp.local."
	instance dnsmessage.Name // "<label>._macula._tcp.local."
	host     dnsmessage.Name // "<hostlabel>.local."
	enum     dnsmessage.Name
	port     uint16
	txt      []string
	ttl      uint32
}

func newOurRecords(service, node string, port uint16, ttl uint32) (*ourRecords, error) {
	svc := service + "." + domain
	r := &ourRecords{port: port, ttl: ttl, txt: []string{"node=" + node, "v=1"}}
	var err error
	if r.service, err = dnsmessage.NewName(svc); err != nil {
		return nil, fmt.Errorf("mdns: service name %q: %w", svc, err)
	}
	if r.instance, err = dnsmessage.NewName(instanceLabel(node) + "." + svc); err != nil {
		return nil, fmt.Errorf("mdns: instance name for %q: %w", node, err)
	}
	if r.host, err = dnsmessage.NewName(hostLabel(node) + "." + domain); err != nil {
		return nil, fmt.Errorf("mdns: host name for %q: %w", node, err)
	}
	r.enum = dnsmessage.MustNewName(enumName)
	return r, nil
}

// addrs are the addresses published for one interface.
type addrs struct {
	v4, v6 []netip.Addr
}

// appendResponse builds an unsolicited or multicast response holding the
// answer kinds, then the additional kinds not already answered. goodbye
// sets every TTL to 0. Address records with no address are left out. The
// packet is cut before sendLimit bytes where possible.
func (r *ourRecords) appendResponse(buf []byte, answers, additional kinds, a addrs, goodbye bool) ([]byte, error) {
	b := dnsmessage.NewBuilder(buf, dnsmessage.Header{Response: true, Authoritative: true})
	b.EnableCompression()
	if err := b.StartAnswers(); err != nil {
		return nil, err
	}
	ttl := r.ttl
	if goodbye {
		ttl = 0
	}
	write := func(k rrKind) error {
		shared := dnsmessage.ResourceHeader{Class: dnsmessage.ClassINET, TTL: ttl}
		unique := dnsmessage.ResourceHeader{Class: dnsmessage.ClassINET | flushBit, TTL: ttl}
		switch k {
		case kindPTR:
			shared.Name = r.service
			return b.PTRResource(shared, dnsmessage.PTRResource{PTR: r.instance})
		case kindEnum:
			shared.Name = r.enum
			return b.PTRResource(shared, dnsmessage.PTRResource{PTR: r.service})
		case kindSRV:
			unique.Name = r.instance
			return b.SRVResource(unique, dnsmessage.SRVResource{Port: r.port, Target: r.host})
		case kindTXT:
			unique.Name = r.instance
			return b.TXTResource(unique, dnsmessage.TXTResource{TXT: r.txt})
		case kindA:
			unique.Name = r.host
			for _, ip := range a.v4 {
				if err := b.AResource(unique, dnsmessage.AResource{A: ip.As4()}); err != nil {
					return err
				}
			}
		case kindAAAA:
			unique.Name = r.host
			for _, ip := range a.v6 {
				if err := b.AAAAResource(unique, dnsmessage.AAAAResource{AAAA: ip.As16()}); err != nil {
					return err
				}
			}
		}
		return nil
	}
	for k := range numKinds {
		if answers.has(k) {
			if err := write(k); err != nil {
				return nil, err
			}
		}
	}
	if err := b.StartAdditionals(); err != nil {
		return nil, err
	}
	for k := range numKinds {
		if additional.has(k) && !answers.has(k) {
			if err := write(k); err != nil {
				return nil, err
			}
		}
	}
	return b.Finish()
}

// appendQuery builds a query for the service PTR (when ptr is set) and for
// the TXT of each name in txtFor, with the known PTR answers.
func appendQuery(buf []byte, service dnsmessage.Name, ptr bool, txtFor []string, known []knownPTR) ([]byte, error) {
	b := dnsmessage.NewBuilder(buf, dnsmessage.Header{})
	b.EnableCompression()
	if err := b.StartQuestions(); err != nil {
		return nil, err
	}
	size := 12
	if ptr {
		if err := b.Question(dnsmessage.Question{Name: service, Type: dnsmessage.TypePTR, Class: dnsmessage.ClassINET}); err != nil {
			return nil, err
		}
		size += len(service.String()) + 5
	}
	for _, n := range txtFor {
		name, err := dnsmessage.NewName(n)
		if err != nil {
			continue
		}
		if size+len(n)+5 > sendLimit/2 {
			break
		}
		size += len(n) + 5
		if err := b.Question(dnsmessage.Question{Name: name, Type: dnsmessage.TypeTXT, Class: dnsmessage.ClassINET}); err != nil {
			return nil, err
		}
	}
	if err := b.StartAnswers(); err != nil {
		return nil, err
	}
	for _, k := range known {
		name, err := dnsmessage.NewName(k.target)
		if err != nil {
			continue
		}
		if size+len(k.target)+14 > sendLimit {
			break // RFC 6762 §7.2 would continue in a TC packet; a full answer set is harmless
		}
		size += len(k.target) + 14
		h := dnsmessage.ResourceHeader{Name: service, Class: dnsmessage.ClassINET, TTL: k.ttl}
		if err := b.PTRResource(h, dnsmessage.PTRResource{PTR: name}); err != nil {
			return nil, err
		}
	}
	return b.Finish()
}

// knownPTR is a known answer for a query.
type knownPTR struct {
	target string
	ttl    uint32
}
