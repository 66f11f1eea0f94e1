package mdns

import (
	"encoding/hex"
	"log/slog"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"
	"golang.org/x/net/dns/dnsmessage"

	"github.com/macula-io/cluster/discovery"
	"github.com/macula-io/cluster/internal/disctest"
	"github.com/macula-io/cluster/internal/ratelimit"
)

func testRecords(t testing.TB) *ourRecords {
	t.Helper()
	r, err := newOurRecords("_macula._tcp", "api@10.0.0.5:9100", 9100, 120)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

var testAddrs = addrs{
	v4: []netip.Addr{netip.MustParseAddr("10.0.0.5")},
	v6: []netip.Addr{netip.MustParseAddr("fe80::1")},
}

func TestLabels(t *testing.T) {
	for _, tc := range []struct{ node, inst, host string }{
		{"api@10.0.0.5:9100", "api@10-0-0-5:9100", "api-10-0-0-5-9100"},
		{"API@[fd00::1]:9100", "API@[fd00::1]:9100", "api-fd00-1-9100"},
		{"a@b", "a@b", "a-b"},
		{"@@@", "@@@", "macula"},
		{strings.Repeat("n", 70) + "@h:1", strings.Repeat("n", 54) + "-", strings.Repeat("n", 54) + "-"},
	} {
		inst, host := instanceLabel(tc.node), hostLabel(tc.node)
		if !strings.HasPrefix(inst, tc.inst) || !strings.HasPrefix(host, tc.host) || len(inst) > 63 || len(host) > 63 {
			t.Errorf("%q: instance %q host %q, want %q %q", tc.node, inst, host, tc.inst, tc.host)
		}
		if strings.Contains(inst, ".") {
			t.Errorf("%q: dot in instance label %q", tc.node, inst)
		}
	}
	if instanceLabel(strings.Repeat("n", 70)+"@h:1") == instanceLabel(strings.Repeat("n", 70)+"@h:2") {
		t.Error("long nodes differing at the end share a label")
	}
}

// golden is the announcement of api@10.0.0.5:9100 (PTR, SRV, TXT, A,
// AAAA, service-type PTR; TTL 120; name compression).
const golden = "000084000000000600000000075f6d6163756c61045f746370056c6f63616c00000c0001000000780014116170694031" +
	"302d302d302d353a39313030c00cc02a0021800100000078001f00000000238c116170692d31302d302d302d352d3931" +
	"3030056c6f63616c00c02a0010800100000078001b166e6f64653d6170694031302e302e302e353a3931303003763d31" +
	"116170692d31302d302d302d352d39313030c019000180010000007800040a000005c090001c8001000000780010fe80" +
	"0000000000000000000000000001095f7365727669636573075f646e732d7364045f756470c019000c00010000007800" +
	"02c00c"

func TestResponseWire(t *testing.T) {
	r := testRecords(t)
	b, err := r.appendResponse(nil, allKinds(), 0, testAddrs, false)
	if err != nil {
		t.Fatal(err)
	}
	if got := hex.EncodeToString(b); got != golden {
		t.Errorf("wire bytes changed:\n got %s\nwant %s", got, golden)
	}

	// Decode with an independent implementation (miekg/dns).
	var m dns.Msg
	if err := m.Unpack(b); err != nil {
		t.Fatal(err)
	}
	if !m.Response || !m.Authoritative || m.Id != 0 || len(m.Answer) != 6 || len(m.Extra) != 0 {
		t.Fatalf("header/sections: %v", m.String())
	}
	want := []string{
		"_macula._tcp.local.\t120\tIN\tPTR\tapi\\@10-0-0-5:9100._macula._tcp.local.",
		"api\\@10-0-0-5:9100._macula._tcp.local.\t120\tCLASS32769\tSRV\t0 0 9100 api-10-0-0-5-9100.local.",
		"api\\@10-0-0-5:9100._macula._tcp.local.\t120\tCLASS32769\tTXT\t\"node=api@10.0.0.5:9100\" \"v=1\"",
		"api-10-0-0-5-9100.local.\t120\tCLASS32769\tA\t10.0.0.5",
		"api-10-0-0-5-9100.local.\t120\tCLASS32769\tAAAA\tfe80::1",
		"_services._dns-sd._udp.local.\t120\tIN\tPTR\t_macula._tcp.local.",
	}
	for i, rr := range m.Answer {
		if rr.String() != want[i] {
			t.Errorf("answer %d:\n got %s\nwant %s", i, rr.String(), want[i])
		}
	}

	// Goodbye: same records, TTL 0.
	b, err = r.appendResponse(nil, allKinds(), 0, testAddrs, true)
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Unpack(b); err != nil {
		t.Fatal(err)
	}
	for _, rr := range m.Answer {
		if rr.Header().Ttl != 0 {
			t.Errorf("goodbye with TTL: %v", rr)
		}
	}

	// Answer to a PTR query: PTR in answers, the rest as additional records.
	var ans, add kinds
	ans.add(kindPTR)
	for _, k := range []rrKind{kindSRV, kindTXT, kindA, kindAAAA} {
		add.add(k)
	}
	b, err = r.appendResponse(nil, ans, add, addrs{v4: testAddrs.v4}, false)
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Unpack(b); err != nil {
		t.Fatal(err)
	}
	if len(m.Answer) != 1 || len(m.Extra) != 3 { // no IPv6 address: no AAAA
		t.Fatalf("PTR answer: %v", m.String())
	}
}

func TestQueryWire(t *testing.T) {
	r := testRecords(t)
	known := []knownPTR{{target: "x._macula._tcp.local.", ttl: 100}}
	b, err := appendQuery(nil, r.service, true, []string{"y._macula._tcp.local."}, known)
	if err != nil {
		t.Fatal(err)
	}
	var m dns.Msg
	if err := m.Unpack(b); err != nil {
		t.Fatal(err)
	}
	if m.Response || len(m.Question) != 2 || len(m.Answer) != 1 ||
		m.Question[0].Name != "_macula._tcp.local." || m.Question[0].Qtype != dns.TypePTR ||
		m.Question[1].Name != "y._macula._tcp.local." || m.Question[1].Qtype != dns.TypeTXT ||
		m.Answer[0].(*dns.PTR).Ptr != "x._macula._tcp.local." || m.Answer[0].Header().Ttl != 100 {
		t.Fatalf("query: %v", m.String())
	}
	// Many known answers: the packet stays under the limit.
	known = nil
	for i := range 200 {
		known = append(known, knownPTR{target: strings.Repeat("k", 40) + string(rune('a'+i%26)) + "._macula._tcp.local.", ttl: 100})
	}
	b, err = appendQuery(nil, r.service, true, nil, known)
	if err != nil || len(b) > sendLimit {
		t.Fatalf("%d bytes, %v", len(b), err)
	}
}

func TestParseMessage(t *testing.T) {
	r := testRecords(t)
	b, _ := r.appendResponse(nil, allKinds(), 0, testAddrs, false)
	m, err := parseMessage(b)
	if err != nil {
		t.Fatal(err)
	}
	if !m.Response || len(m.Records) != 6 {
		t.Fatalf("%+v", m)
	}
	txt := m.Records[2]
	if txt.Type != dnsmessage.TypeTXT || !txt.Flush || txt.TTL != 120 || txt.Name != "api@10-0-0-5:9100._macula._tcp.local." {
		t.Fatalf("txt %+v", txt)
	}
	node, v, okN, okV := txtNode(txt.Text)
	if node != "api@10.0.0.5:9100" || v != "1" || !okN || !okV {
		t.Fatalf("txtNode %q %q", node, v)
	}
	if m.Records[3].Addr != netip.MustParseAddr("10.0.0.5") || m.Records[4].Addr != netip.MustParseAddr("fe80::1") ||
		m.Records[1].Port != 9100 || m.Records[1].Target != "api-10-0-0-5-9100.local." {
		t.Fatalf("records %+v", m.Records)
	}

	// A foreign instance name with a dot in its label (legal in DNS-SD):
	// that record is skipped, the rest of the packet is used.
	var mm dns.Msg
	mm.Response = true
	ptr1, _ := dns.NewRR(`_macula._tcp.local. 120 IN PTR My\.Node._macula._tcp.local.`)
	ptr2, _ := dns.NewRR(`_macula._tcp.local. 120 IN PTR other._macula._tcp.local.`)
	txt1, _ := dns.NewRR(`My\.Node._macula._tcp.local. 120 IN TXT "node=x@127.0.0.1:1"`)
	mm.Answer = []dns.RR{ptr1, txt1, ptr2}
	raw, err := mm.Pack()
	if err != nil {
		t.Fatal(err)
	}
	m, err = parseMessage(raw)
	if err != nil {
		t.Fatal(err)
	}
	if len(m.Records) != 1 || m.Records[0].Target != "other._macula._tcp.local." || m.Skipped != 2 {
		t.Fatalf("dotted label: %+v", m)
	}

	for _, bad := range [][]byte{
		nil,
		{0, 0, 0x84, 0, 0, 0, 0, 5},             // short header
		{0, 0, 0x84, 0, 0, 0, 0, 1, 0, 0, 0, 0}, // one answer promised, none there
		append([]byte{}, b[:40]...),             // cut in the middle
		make([]byte, maxPacket+1),
	} {
		if _, err := parseMessage(bad); err == nil {
			t.Errorf("%x: no error", bad)
		}
	}
}

// fuzzEngine is an engine without sockets, for feeding parsed packets to
// the table code.
func fuzzEngine(t testing.TB) *engine {
	r := testRecords(t)
	return &engine{
		s:      NewStrategy(Config{}),
		st:     settings{maxPeers: 8, log: slog.New(slog.DiscardHandler), port: 5353},
		self:   discovery.Peer{Name: "api@10.0.0.5", Addr: "10.0.0.5:9100"},
		set:    discovery.NewSet(disctest.New()),
		ours:   r,
		svcKey: lower(r.service.String()), instKey: lower(r.instance.String()), hostKey: lower(r.host.String()),
		table: make(map[string]*entry),
		warn:  ratelimit.New(time.Minute, 0),
	}
}

func FuzzParseMessage(f *testing.F) {
	r := testRecords(f)
	for _, goodbye := range []bool{false, true} {
		b, _ := r.appendResponse(nil, allKinds(), 0, testAddrs, goodbye)
		f.Add(b)
	}
	q, _ := appendQuery(nil, r.service, true, []string{"y._macula._tcp.local."}, []knownPTR{{"x._macula._tcp.local.", 9}})
	f.Add(q)
	f.Add(announcement(f, "peer", 120, "node=p@127.0.0.1:1", "v=1"))
	f.Add(announcement(f, "peer", 0, "NODE=p@127.0.0.1"))
	f.Add([]byte{0, 0, 0x84, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0xc0, 12})
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := parseMessage(b)
		if err != nil {
			return
		}
		if len(m.Questions) > maxQuestions || len(m.Records) > maxRecords {
			t.Fatalf("%d questions, %d records", len(m.Questions), len(m.Records))
		}
		e := fuzzEngine(t)
		now := time.Unix(1e9, 0)
		m.Response = true
		e.learn(packet{msg: m, src: netip.MustParseAddrPort("127.0.0.1:5353")}, now)
		if len(e.table) > e.st.maxPeers {
			t.Fatalf("table grew to %d", len(e.table))
		}
		e.maybeReport(now)
		for _, p := range e.last {
			q, err := discovery.ParseNode(discovery.FormatNode(p.Name, p.Addr))
			if err != nil || q != p || p.Name == e.self.Name || p.Addr == e.self.Addr {
				t.Fatalf("reported %+v", p)
			}
		}
		if e.set.Len() != len(e.last) {
			t.Fatalf("sink told of %d peers, reported %d", e.set.Len(), len(e.last))
		}
		e.expire(now.Add(5000 * time.Second))
		if len(e.table) != 0 {
			t.Fatalf("%d entries outlived the maximum TTL", len(e.table))
		}
	})
}
