package erldist

import (
	"bytes"
	"encoding/hex"
	"errors"
	"log/slog"
	"math"
	"math/big"
	"os/exec"
	"strings"
	"testing"
)

func mustBig(s string) *big.Int {
	v, ok := new(big.Int).SetString(s, 10)
	if !ok {
		panic(s)
	}
	return v
}

// Golden encodings, checked by hand against erts "External Term Format".
func TestEncodeGolden(t *testing.T) {
	for _, tc := range []struct {
		term Term
		hex  string
	}{
		{int64(1), "836101"},
		{int64(-1), "8362ffffffff"},
		{int64(256), "836200000100"},
		{int64(1) << 40, "836e0600000000000001"},
		{Atom("ok"), "8377026f6b"},
		{true, "837704747275 65"},
		{List{}, "836a"},
		{List{int64(1), int64(2)}, "836b00020102"},
		{List{Atom("a")}, "836c000000017701616a"},
		{ImproperList{Elems: []Term{int64(1)}, Tail: int64(2)}, "836c0000000161016102"},
		{[]byte("ab"), "836d000000026162"},
		{Tuple{Atom("a"), int64(1)}, "8368027701616101"},
		{Map{{Key: Atom("a"), Value: int64(1)}}, "8374000000017701616101"},
		{1.5, "83463ff8000000000000"},
		{Pid{Node: "a@b", ID: 1, Serial: 2, Creation: 3}, "8358770361406200000001000000020000000 3"},
		{Ref{Node: "a@b", Creation: 3, IDs: []uint32{1, 2, 3}}, "835a000377036140620000000300000001000000020000000 3"},
		{Export{Module: "erlang", Function: "abs", Arity: 1}, "83717706" + hex.EncodeToString([]byte("erlang")) + "7703616273610 1"},
	} {
		want, err := hex.DecodeString(strings.ReplaceAll(tc.hex, " ", ""))
		if err != nil {
			t.Fatal(err)
		}
		got, err := Encode(tc.term)
		if err != nil {
			t.Fatalf("%#v: %v", tc.term, err)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("Encode(%#v) = %x, want %x", tc.term, got, want)
		}
		back, err := Decode(got)
		if err != nil {
			t.Fatalf("Decode(%x): %v", got, err)
		}
		norm := tc.term
		if b, ok := norm.(bool); ok {
			norm = Atom(map[bool]string{true: "true", false: "false"}[b])
		}
		if !Equal(back, norm) {
			t.Errorf("Decode(Encode(%#v)) = %#v", tc.term, back)
		}
	}
}

// Erlang expressions, their term_to_binary from a real erl, what Go must decode them to
// (nil: only a byte-identical re-encoding is checked), and whether Go's encoding is identical.
var erlangTerms = []struct {
	expr      string
	want      Term
	identical bool
}{
	{"0", int64(0), true},
	{"255", int64(255), true},
	{"256", int64(256), true},
	{"-1", int64(-1), true},
	{"2147483647", int64(2147483647), true},
	{"2147483648", int64(2147483648), true},
	{"-2147483649", int64(-2147483649), true},
	{"18446744073709551616", mustBig("18446744073709551616"), true},
	{"-(1 bsl 2100)", new(big.Int).Neg(new(big.Int).Lsh(big.NewInt(1), 2100)), true},
	{"3.14", 3.14, true},
	{"-0.0", math.Copysign(0, -1), true},
	{"ok", Atom("ok"), true},
	{"'héllo wörld'", Atom("héllo wörld"), true},
	{"list_to_atom(lists:duplicate(200, 233))", Atom(strings.Repeat("é", 200)), true},
	{"{}", Tuple{}, true},
	{"{a, 1, \"s\"}", Tuple{Atom("a"), int64(1), List{int64('s')}}, true},
	{"list_to_tuple(lists:seq(1, 300))", nil, true},
	{"[]", List{}, true},
	{"\"abc\"", List{int64('a'), int64('b'), int64('c')}, true},
	{"[1, 300, a]", List{int64(1), int64(300), Atom("a")}, true},
	{"[a | b]", ImproperList{Elems: []Term{Atom("a")}, Tail: Atom("b")}, true},
	{"<<1, 2, 3>>", []byte{1, 2, 3}, true},
	{"<<>>", []byte{}, true},
	{"<<1:3>>", BitBinary{Data: []byte{0x20}, Bits: 3}, true},
	{"#{}", Map{}, true},
	{"#{a => 1, <<\"b\">> => [2]}", Map{{Key: Atom("a"), Value: int64(1)}, {Key: []byte("b"), Value: List{int64(2)}}}, true},
	{"self()", nil, true},
	{"make_ref()", nil, true},
	{"hd(erlang:ports())", nil, true},
	{"fun erlang:abs/1", Export{Module: "erlang", Function: "abs", Arity: 1}, true},
	{"fun(X) -> X + 1 end", nil, true},
	{"term_to_binary(x, [{minor_version, 2}])", []byte{131, 119, 1, 'x'}, true},
	{"{[{nested, #{k => {1, [2, {3}]}}}], <<\"bin\">>, 1.0e300}", nil, true},
	// Forms Erlang writes only on request; Go decodes them and writes the modern form.
	{"{old_atom, abc}", nil, false}, // minor_version 0: ATOM_EXT, FLOAT_EXT
	{"{compressed, lists:seq(1, 500)}", nil, false},
}

// erlTermHex prints term_to_binary of each expression, hex, one per line, with minor_version 2
// (UTF-8 atoms, OTP 26's default; OTP 25 writes ATOM_EXT by default, which Go decodes but does
// not write). The two marked expressions are encoded with {minor_version, 0} and [compressed].
func erlTermHex(t *testing.T, exprs []string) []string {
	needErlang(t)
	var prog strings.Builder
	prog.WriteString("Enc = fun({old_atom, A}) -> term_to_binary({A, 1.5}, [{minor_version, 0}]); ({compressed, T}) -> term_to_binary(T, [compressed]); (T) -> term_to_binary(T, [{minor_version, 2}]) end, ")
	prog.WriteString("Ts = [")
	for i, e := range exprs {
		if i > 0 {
			prog.WriteString(", ")
		}
		prog.WriteString(e)
	}
	prog.WriteString("], [io:format(\"~s~n\", [binary:encode_hex(Enc(T))]) || T <- Ts], halt().")
	cmd := exec.Command("erl", "-noshell", "-start_epmd", "false", "-eval", prog.String())
	cmd.Dir = t.TempDir() // a crash dump lands there, not in the source tree
	cmd.Env = append(cmd.Environ(), "ERL_CRASH_DUMP_SECONDS=0")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("erl: %v\n%s", err, out)
	}
	lines := strings.Fields(string(out))
	if len(lines) != len(exprs) {
		t.Fatalf("erl printed %d lines for %d terms:\n%s", len(lines), len(exprs), out)
	}
	return lines
}

func TestDecodeErlangTermToBinary(t *testing.T) {
	exprs := make([]string, len(erlangTerms))
	for i, tc := range erlangTerms {
		exprs[i] = tc.expr
	}
	for i, h := range erlTermHex(t, exprs) {
		tc := erlangTerms[i]
		b, err := hex.DecodeString(h)
		if err != nil {
			t.Fatal(err)
		}
		got, err := Decode(b)
		if err != nil {
			t.Errorf("%s: Decode(%s): %v", tc.expr, h, err)
			continue
		}
		if tc.want != nil && !Equal(got, tc.want) {
			t.Errorf("%s: decoded %#v, want %#v", tc.expr, got, tc.want)
		}
		enc, err := Encode(got)
		if err != nil {
			t.Errorf("%s: Encode: %v", tc.expr, err)
			continue
		}
		if tc.identical && !bytes.Equal(enc, b) {
			t.Errorf("%s: Go encodes\n%x\nErlang\n%x", tc.expr, enc, b)
		}
		if back, err := Decode(enc); err != nil || !Equal(back, got) {
			t.Errorf("%s: round trip: %#v, %v", tc.expr, back, err)
		}
	}
}

func TestDecodeRejects(t *testing.T) {
	for _, h := range []string{
		"", "00", "83", "8361", "8362ffff", "836c7fffffff", "8368ff", "8374ffffffff",
		"836dffffffff00", "836effff", "836fffffffff00", "835a0006770161000000000000000000",
		"8352", "83ff", "8350ffffffff", "8350000000057801", "836a6a",
		"8377026f", "837701ff", // invalid UTF-8 atom
	} {
		b, _ := hex.DecodeString(h)
		if _, err := Decode(b); !errors.Is(err, ErrTerm) {
			t.Errorf("Decode(%s) = %v, want ErrTerm", h, err)
		}
	}
}

// A deep nesting is refused with an error, not a stack overflow.
func TestDecodeDepth(t *testing.T) {
	b := []byte{131}
	for range 100000 {
		b = append(b, tagSmallTuple, 1)
	}
	b = append(b, tagNil)
	if _, err := Decode(b); !errors.Is(err, ErrTerm) {
		t.Fatalf("deep tuple: %v", err)
	}
}

func FuzzDecode(f *testing.F) {
	for _, h := range []string{
		"836101", "8362ffffffff", "836e05000000000001", "8377026f6b", "836b00020102",
		"836c000000017701616a", "836c0000000161016102", "836d000000026162", "8368027701616101",
		"8374000000017701616101", "83463ff8000000000000", "83580361406200000001000000020000000003",
		"835a00037703614062000000030000000100000002000000 03", "8364000361626363",
		"834d0000000103e0", "8359770161000000010000000 1", "83787701610000000000000001000000 01",
		"8350000000097801cb6460606000000003000001",
	} {
		b, _ := hex.DecodeString(strings.ReplaceAll(h, " ", ""))
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		term, err := Decode(b)
		if err != nil {
			if !errors.Is(err, ErrTerm) {
				t.Fatalf("error not ErrTerm: %v", err)
			}
			return
		}
		enc, err := Encode(term)
		if err != nil {
			return // e.g. a latin-1 atom longer than 65535 bytes in UTF-8
		}
		back, err := Decode(enc)
		if err != nil {
			t.Fatalf("re-encoding %x of %#v does not decode: %v", enc, term, err)
		}
		if !Equal(back, term) {
			t.Fatalf("round trip changed %#v into %#v", term, back)
		}
	})
}

func FuzzHandshakeName(f *testing.F) {
	f.Add(nameMsg(ourFlags, nil, 7, "a@b"), false)
	c := uint32(5)
	f.Add(nameMsg(ourFlags, &c, 7, "a@b"), true)
	f.Fuzz(func(t *testing.T, b []byte, withChallenge bool) {
		p, err := parseNameMsg(b, withChallenge)
		if err == nil && (p.name == "" || p.flags&requiredFlags != requiredFlags) {
			t.Fatalf("accepted %+v", p)
		}
	})
}

// FuzzDispatch feeds arbitrary distribution messages to a node's dispatcher: it may reject
// them, never panic.
func FuzzDispatch(f *testing.F) {
	pid := Pid{Node: "e@h", ID: 1, Creation: 1}
	for _, ctl := range []Tuple{
		{int64(opRegSend), pid, Atom(""), Atom("net_kernel")},
		{int64(opMonitorP), pid, Atom("x"), Ref{Node: "e@h", IDs: []uint32{1}}},
		{int64(opLink), pid, Pid{Node: "go@h", ID: 2}},
		{int64(opUnlinkID), int64(7), pid, Pid{Node: "go@h", ID: 2}},
		{int64(opRegSend), pid, Atom(""), Atom("global_name_server")},
	} {
		p, _ := encodeFrame(ctl, Tuple{Atom("$gen_call"), Tuple{pid, Ref{Node: "e@h", IDs: []uint32{1}}}, Tuple{Atom("is_auth"), Atom("e@h")}}, true)
		f.Add(p)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		if len(b) == 0 {
			return
		}
		n := &Node{name: "go@h", names: map[Atom]*Mailbox{}, pids: map[uint32]*Mailbox{}, cfg: Config{MailboxSize: 1}}
		n.log = slog.New(slog.DiscardHandler)
		m := &Mailbox{n: n, name: "x", pid: Pid{Node: "go@h", ID: 2}, c: make(chan Message, 1), links: map[Pid]struct{}{}, monitors: map[string]monitor{}}
		n.names["x"], n.pids[2] = m, m
		c := &conn{n: n, peer: "e@h", flags: ourFlags, out: make(chan []byte, 64), done: make(chan struct{})}
		n.dispatch(c, b)
	})
}
