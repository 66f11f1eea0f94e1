package erldist

import (
	"fmt"
	"math/big"
	"strconv"
	"strings"
)

// Term is any Erlang term. The decoder produces, and the encoder accepts, these Go types:
//
//	integer          int64 when it fits, *big.Int otherwise (the encoder also takes int, int32, uint8...)
//	float            float64
//	atom             Atom (true/false are Atom("true")/Atom("false"); the encoder also takes bool)
//	tuple            Tuple
//	proper list      List ([] for nil; a STRING_EXT decodes to a List of int64)
//	improper list    ImproperList
//	binary           []byte (the encoder also takes string)
//	bitstring        BitBinary
//	map              Map (pairs in wire order)
//	pid, port, ref   Pid, Port, Ref
//	fun, export      Fun, Export
type Term = any

// Atom is an Erlang atom.
type Atom string

// Tuple is an Erlang tuple.
type Tuple []Term

// List is a proper Erlang list; an empty or nil List is [].
type List []Term

// ImproperList is a list whose tail is not [] (for example [a|b]).
type ImproperList struct {
	Elems []Term
	Tail  Term
}

// BitBinary is a bitstring whose last byte holds Bits significant bits (1..8).
type BitBinary struct {
	Data []byte
	Bits uint8
}

// Pair is one key/value association of a Map.
type Pair struct{ Key, Value Term }

// Map is an Erlang map as an ordered list of pairs (keys may be any term).
type Map []Pair

// Get returns the value of the first pair whose key equals k (compared with Equal).
func (m Map) Get(k Term) (Term, bool) {
	for _, p := range m {
		if Equal(p.Key, k) {
			return p.Value, true
		}
	}
	return nil, false
}

// Pid is an Erlang process identifier.
type Pid struct {
	Node     Atom
	ID       uint32
	Serial   uint32
	Creation uint32
}

func (p Pid) String() string { return fmt.Sprintf("<%s.%d.%d>", p.Node, p.ID, p.Serial) }

// Port is an Erlang port identifier.
type Port struct {
	Node     Atom
	ID       uint64
	Creation uint32
}

// Ref is an Erlang reference (up to 5 ID words).
type Ref struct {
	Node     Atom
	Creation uint32
	IDs      []uint32
}

func (r Ref) String() string {
	s := make([]string, len(r.IDs))
	for i, id := range r.IDs {
		s[i] = strconv.FormatUint(uint64(id), 10)
	}
	return fmt.Sprintf("#Ref<%s.%s>", r.Node, strings.Join(s, "."))
}

// Fun is a local fun (NEW_FUN_EXT), kept field by field so it can be sent back unchanged.
type Fun struct {
	Arity    uint8
	Uniq     [16]byte
	Index    uint32
	Module   Atom
	OldIndex Term
	OldUniq  Term
	Pid      Term
	Free     []Term
}

// Export is an external fun, fun Module:Function/Arity.
type Export struct {
	Module   Atom
	Function Atom
	Arity    uint8
}

// Equal reports whether two terms are equal by value (integers compare across int64 and *big.Int).
func Equal(a, b Term) bool {
	switch x := a.(type) {
	case []byte:
		y, ok := b.([]byte)
		return ok && string(x) == string(y)
	case *big.Int:
		return cmpInt(x, b)
	case int64:
		return cmpInt(big.NewInt(x), b)
	case Tuple:
		y, ok := b.(Tuple)
		return ok && equalSlice(x, y)
	case List:
		y, ok := b.(List)
		return ok && equalSlice(x, y)
	case ImproperList:
		y, ok := b.(ImproperList)
		return ok && equalSlice(x.Elems, y.Elems) && Equal(x.Tail, y.Tail)
	case Map:
		y, ok := b.(Map)
		if !ok || len(x) != len(y) {
			return false
		}
		for i := range x {
			if !Equal(x[i].Key, y[i].Key) || !Equal(x[i].Value, y[i].Value) {
				return false
			}
		}
		return true
	case Ref:
		y, ok := b.(Ref)
		if !ok || x.Node != y.Node || x.Creation != y.Creation || len(x.IDs) != len(y.IDs) {
			return false
		}
		for i := range x.IDs {
			if x.IDs[i] != y.IDs[i] {
				return false
			}
		}
		return true
	case BitBinary:
		y, ok := b.(BitBinary)
		return ok && x.Bits == y.Bits && string(x.Data) == string(y.Data)
	case Fun:
		y, ok := b.(Fun)
		return ok && x.Arity == y.Arity && x.Uniq == y.Uniq && x.Index == y.Index && x.Module == y.Module &&
			Equal(x.OldIndex, y.OldIndex) && Equal(x.OldUniq, y.OldUniq) && Equal(x.Pid, y.Pid) && equalSlice(x.Free, y.Free)
	case float64:
		y, ok := b.(float64)
		return ok && (x == y || (x != x && y != y))
	default:
		return a == b
	}
}

func cmpInt(x *big.Int, b Term) bool {
	switch y := b.(type) {
	case int64:
		return x.Cmp(big.NewInt(y)) == 0
	case *big.Int:
		return x.Cmp(y) == 0
	}
	return false
}

func equalSlice(a, b []Term) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if !Equal(a[i], b[i]) {
			return false
		}
	}
	return true
}
