package erldist

import (
	"bytes"
	"compress/zlib"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"math/big"
	"unicode/utf8"
)

// External term format tags (erts "External Term Format").
const (
	tagVersion        = 131
	tagCompressed     = 80
	tagNewFloat       = 70
	tagBitBinary      = 77
	tagAtomCacheRef   = 82
	tagNewPid         = 88
	tagNewPort        = 89
	tagNewerReference = 90
	tagSmallInteger   = 97
	tagInteger        = 98
	tagFloat          = 99
	tagAtom           = 100
	tagReference      = 101
	tagPort           = 102
	tagPid            = 103
	tagSmallTuple     = 104
	tagLargeTuple     = 105
	tagNil            = 106
	tagString         = 107
	tagList           = 108
	tagBinary         = 109
	tagSmallBig       = 110
	tagLargeBig       = 111
	tagNewFun         = 112
	tagExport         = 113
	tagNewReference   = 114
	tagSmallAtom      = 115
	tagMap            = 116
	tagAtomUTF8       = 118
	tagSmallAtomUTF8  = 119
	tagV4Port         = 120
)

// ErrTerm is returned (wrapped) for every malformed external term.
var ErrTerm = errors.New("erldist: malformed term")

// Limits that bound what a hostile peer can make the decoder do.
const (
	maxDepth        = 2048     // nesting of tuples, lists, maps, funs
	maxUncompressed = 64 << 20 // bytes a COMPRESSED term may inflate to
)

// Decode decodes one term in external format, starting with the version byte 131.
// It returns an error wrapping ErrTerm for malformed input, also for trailing bytes.
func Decode(b []byte) (Term, error) {
	t, rest, err := DecodePrefix(b)
	if err != nil {
		return nil, err
	}
	if len(rest) != 0 {
		return nil, fmt.Errorf("%w: %d trailing bytes", ErrTerm, len(rest))
	}
	return t, nil
}

// DecodePrefix decodes one term (with its 131 version byte) from the start of b and returns the rest.
func DecodePrefix(b []byte) (Term, []byte, error) {
	if len(b) < 1 || b[0] != tagVersion {
		return nil, nil, fmt.Errorf("%w: no version byte 131", ErrTerm)
	}
	b = b[1:]
	if len(b) > 0 && b[0] == tagCompressed {
		if len(b) < 5 {
			return nil, nil, fmt.Errorf("%w: short compressed header", ErrTerm)
		}
		size := binary.BigEndian.Uint32(b[1:5])
		if size > maxUncompressed {
			return nil, nil, fmt.Errorf("%w: compressed term claims %d bytes", ErrTerm, size)
		}
		zr, err := zlib.NewReader(bytes.NewReader(b[5:]))
		if err != nil {
			return nil, nil, fmt.Errorf("%w: %v", ErrTerm, err)
		}
		var buf bytes.Buffer // grows with the real data, never by the claimed size
		n, err := io.Copy(&buf, io.LimitReader(zr, int64(size)+1))
		if err != nil || n != int64(size) {
			return nil, nil, fmt.Errorf("%w: compressed size mismatch", ErrTerm)
		}
		d := decoder{b: buf.Bytes()}
		t, err := d.term(0)
		if err != nil {
			return nil, nil, err
		}
		if len(d.b) != 0 {
			return nil, nil, fmt.Errorf("%w: trailing bytes in compressed term", ErrTerm)
		}
		return t, nil, nil // the compressed stream is assumed to run to the end of b
	}
	d := decoder{b: b}
	t, err := d.term(0)
	if err != nil {
		return nil, nil, err
	}
	return t, d.b, nil
}

type decoder struct{ b []byte }

func (d *decoder) fail(what string) error { return fmt.Errorf("%w: %s", ErrTerm, what) }

func (d *decoder) take(n int) ([]byte, error) {
	if n < 0 || n > len(d.b) {
		return nil, d.fail("truncated")
	}
	p := d.b[:n:n]
	d.b = d.b[n:]
	return p, nil
}

func (d *decoder) u8() (uint8, error) {
	p, err := d.take(1)
	if err != nil {
		return 0, err
	}
	return p[0], nil
}

func (d *decoder) u16() (uint16, error) {
	p, err := d.take(2)
	if err != nil {
		return 0, err
	}
	return binary.BigEndian.Uint16(p), nil
}

func (d *decoder) u32() (uint32, error) {
	p, err := d.take(4)
	if err != nil {
		return 0, err
	}
	return binary.BigEndian.Uint32(p), nil
}

// count checks a claimed element count against the bytes left (each element takes at least min bytes).
func (d *decoder) count(n uint32, min int) (int, error) {
	if uint64(n)*uint64(min) > uint64(len(d.b)) {
		return 0, d.fail("count exceeds input")
	}
	return int(n), nil
}

func (d *decoder) atom(depth int) (Atom, error) {
	t, err := d.term(depth)
	if err != nil {
		return "", err
	}
	a, ok := t.(Atom)
	if !ok {
		return "", d.fail("atom expected")
	}
	return a, nil
}

func (d *decoder) atomText(n int, latin1 bool) (Atom, error) {
	p, err := d.take(n)
	if err != nil {
		return "", err
	}
	if latin1 {
		r := make([]rune, len(p))
		for i, c := range p {
			r[i] = rune(c)
		}
		return Atom(string(r)), nil
	}
	if !utf8.Valid(p) {
		return "", d.fail("atom is not UTF-8")
	}
	return Atom(p), nil
}

func (d *decoder) term(depth int) (Term, error) {
	if depth > maxDepth {
		return nil, d.fail("nested too deep")
	}
	tag, err := d.u8()
	if err != nil {
		return nil, err
	}
	switch tag {
	case tagSmallInteger:
		v, err := d.u8()
		return int64(v), err
	case tagInteger:
		v, err := d.u32()
		return int64(int32(v)), err
	case tagNewFloat:
		p, err := d.take(8)
		if err != nil {
			return nil, err
		}
		return math.Float64frombits(binary.BigEndian.Uint64(p)), nil
	case tagFloat:
		p, err := d.take(31)
		if err != nil {
			return nil, err
		}
		var f float64
		s := string(bytes.TrimRight(p, "\x00"))
		if _, err := fmt.Sscanf(s, "%g", &f); err != nil {
			return nil, d.fail("bad FLOAT_EXT")
		}
		return f, nil
	case tagAtomUTF8, tagAtom:
		n, err := d.u16()
		if err != nil {
			return nil, err
		}
		return d.atomText(int(n), tag == tagAtom)
	case tagSmallAtomUTF8, tagSmallAtom:
		n, err := d.u8()
		if err != nil {
			return nil, err
		}
		return d.atomText(int(n), tag == tagSmallAtom)
	case tagSmallTuple, tagLargeTuple:
		var n uint32
		if tag == tagSmallTuple {
			v, err := d.u8()
			n = uint32(v)
			if err != nil {
				return nil, err
			}
		} else if n, err = d.u32(); err != nil {
			return nil, err
		}
		c, err := d.count(n, 1)
		if err != nil {
			return nil, err
		}
		t := make(Tuple, c)
		for i := range t {
			if t[i], err = d.term(depth + 1); err != nil {
				return nil, err
			}
		}
		return t, nil
	case tagNil:
		return List{}, nil
	case tagString:
		n, err := d.u16()
		if err != nil {
			return nil, err
		}
		p, err := d.take(int(n))
		if err != nil {
			return nil, err
		}
		l := make(List, len(p))
		for i, c := range p {
			l[i] = int64(c)
		}
		return l, nil
	case tagList:
		n, err := d.u32()
		if err != nil {
			return nil, err
		}
		c, err := d.count(n, 1)
		if err != nil {
			return nil, err
		}
		elems := make([]Term, c)
		for i := range elems {
			if elems[i], err = d.term(depth + 1); err != nil {
				return nil, err
			}
		}
		tail, err := d.term(depth + 1)
		if err != nil {
			return nil, err
		}
		if l, ok := tail.(List); ok && len(l) == 0 {
			return List(elems), nil
		}
		return ImproperList{Elems: elems, Tail: tail}, nil
	case tagBinary:
		n, err := d.u32()
		if err != nil {
			return nil, err
		}
		if uint64(n) > uint64(len(d.b)) {
			return nil, d.fail("binary exceeds input")
		}
		p, _ := d.take(int(n))
		return bytes.Clone(p), nil
	case tagBitBinary:
		n, err := d.u32()
		if err != nil {
			return nil, err
		}
		bits, err := d.u8()
		if err != nil {
			return nil, err
		}
		if uint64(n) > uint64(len(d.b)) || bits < 1 || bits > 8 || n == 0 {
			return nil, d.fail("bad BIT_BINARY_EXT")
		}
		p, _ := d.take(int(n))
		return BitBinary{Data: bytes.Clone(p), Bits: bits}, nil
	case tagSmallBig, tagLargeBig:
		var n uint32
		if tag == tagSmallBig {
			v, err := d.u8()
			if err != nil {
				return nil, err
			}
			n = uint32(v)
		} else if n, err = d.u32(); err != nil {
			return nil, err
		}
		sign, err := d.u8()
		if err != nil {
			return nil, err
		}
		if uint64(n) > uint64(len(d.b)) {
			return nil, d.fail("big integer exceeds input")
		}
		p, _ := d.take(int(n))
		be := make([]byte, len(p))
		for i, c := range p {
			be[len(p)-1-i] = c
		}
		v := new(big.Int).SetBytes(be)
		if sign != 0 {
			v.Neg(v)
		}
		if v.IsInt64() {
			return v.Int64(), nil
		}
		return v, nil
	case tagMap:
		n, err := d.u32()
		if err != nil {
			return nil, err
		}
		c, err := d.count(n, 2)
		if err != nil {
			return nil, err
		}
		m := make(Map, c)
		for i := range m {
			if m[i].Key, err = d.term(depth + 1); err != nil {
				return nil, err
			}
			if m[i].Value, err = d.term(depth + 1); err != nil {
				return nil, err
			}
		}
		return m, nil
	case tagPid, tagNewPid:
		node, err := d.atom(depth + 1)
		if err != nil {
			return nil, err
		}
		p, err := d.take(8)
		if err != nil {
			return nil, err
		}
		pid := Pid{Node: node, ID: binary.BigEndian.Uint32(p), Serial: binary.BigEndian.Uint32(p[4:])}
		if tag == tagPid {
			c, err := d.u8()
			pid.Creation = uint32(c)
			return pid, err
		}
		pid.Creation, err = d.u32()
		return pid, err
	case tagPort, tagNewPort, tagV4Port:
		node, err := d.atom(depth + 1)
		if err != nil {
			return nil, err
		}
		port := Port{Node: node}
		if tag == tagV4Port {
			p, err := d.take(8)
			if err != nil {
				return nil, err
			}
			port.ID = binary.BigEndian.Uint64(p)
		} else {
			id, err := d.u32()
			if err != nil {
				return nil, err
			}
			port.ID = uint64(id)
		}
		if tag == tagPort {
			c, err := d.u8()
			port.Creation = uint32(c)
			return port, err
		}
		port.Creation, err = d.u32()
		return port, err
	case tagReference:
		node, err := d.atom(depth + 1)
		if err != nil {
			return nil, err
		}
		id, err := d.u32()
		if err != nil {
			return nil, err
		}
		c, err := d.u8()
		return Ref{Node: node, Creation: uint32(c), IDs: []uint32{id}}, err
	case tagNewReference, tagNewerReference:
		n, err := d.u16()
		if err != nil {
			return nil, err
		}
		if n > 5 {
			return nil, d.fail("reference with more than 5 words")
		}
		node, err := d.atom(depth + 1)
		if err != nil {
			return nil, err
		}
		r := Ref{Node: node}
		if tag == tagNewReference {
			c, err := d.u8()
			if err != nil {
				return nil, err
			}
			r.Creation = uint32(c)
		} else if r.Creation, err = d.u32(); err != nil {
			return nil, err
		}
		r.IDs = make([]uint32, n)
		for i := range r.IDs {
			if r.IDs[i], err = d.u32(); err != nil {
				return nil, err
			}
		}
		return r, nil
	case tagExport:
		m, err := d.atom(depth + 1)
		if err != nil {
			return nil, err
		}
		f, err := d.atom(depth + 1)
		if err != nil {
			return nil, err
		}
		a, err := d.term(depth + 1)
		if err != nil {
			return nil, err
		}
		ar, ok := a.(int64)
		if !ok || ar < 0 || ar > 255 {
			return nil, d.fail("bad export arity")
		}
		return Export{Module: m, Function: f, Arity: uint8(ar)}, nil
	case tagNewFun:
		size, err := d.u32()
		if err != nil {
			return nil, err
		}
		if size < 4 || uint64(size-4) > uint64(len(d.b)) {
			return nil, d.fail("bad fun size")
		}
		var f Fun
		if f.Arity, err = d.u8(); err != nil {
			return nil, err
		}
		u, err := d.take(16)
		if err != nil {
			return nil, err
		}
		copy(f.Uniq[:], u)
		if f.Index, err = d.u32(); err != nil {
			return nil, err
		}
		nfree, err := d.u32()
		if err != nil {
			return nil, err
		}
		if f.Module, err = d.atom(depth + 1); err != nil {
			return nil, err
		}
		if f.OldIndex, err = d.term(depth + 1); err != nil {
			return nil, err
		}
		if f.OldUniq, err = d.term(depth + 1); err != nil {
			return nil, err
		}
		if f.Pid, err = d.term(depth + 1); err != nil {
			return nil, err
		}
		c, err := d.count(nfree, 1)
		if err != nil {
			return nil, err
		}
		f.Free = make([]Term, c)
		for i := range f.Free {
			if f.Free[i], err = d.term(depth + 1); err != nil {
				return nil, err
			}
		}
		return f, nil
	case tagAtomCacheRef:
		return nil, d.fail("atom cache reference without a distribution header")
	}
	return nil, fmt.Errorf("%w: unknown tag %d", ErrTerm, tag)
}

// Encode returns the external format of t, starting with the version byte 131.
func Encode(t Term) ([]byte, error) {
	return AppendEncode(nil, t)
}

// AppendEncode appends the 131 version byte and the encoding of t to b.
func AppendEncode(b []byte, t Term) ([]byte, error) {
	b = append(b, tagVersion)
	return appendTerm(b, t, 0)
}

func appendAtom(b []byte, a Atom) []byte {
	if len(a) < 256 {
		b = append(b, tagSmallAtomUTF8, byte(len(a)))
	} else {
		b = append(b, tagAtomUTF8)
		b = binary.BigEndian.AppendUint16(b, uint16(len(a)))
	}
	return append(b, a...)
}

func appendInt(b []byte, v int64) []byte {
	switch {
	case v >= 0 && v <= 255:
		return append(b, tagSmallInteger, byte(v))
	case v >= math.MinInt32 && v <= math.MaxInt32:
		b = append(b, tagInteger)
		return binary.BigEndian.AppendUint32(b, uint32(int32(v)))
	}
	return appendBig(b, big.NewInt(v))
}

func appendBig(b []byte, v *big.Int) []byte {
	if v.IsInt64() {
		if i := v.Int64(); i >= math.MinInt32 && i <= math.MaxInt32 {
			return appendInt(b, i)
		}
	}
	mag := v.Bytes() // big-endian magnitude
	if len(mag) < 256 {
		b = append(b, tagSmallBig, byte(len(mag)))
	} else {
		b = append(b, tagLargeBig)
		b = binary.BigEndian.AppendUint32(b, uint32(len(mag)))
	}
	if v.Sign() < 0 {
		b = append(b, 1)
	} else {
		b = append(b, 0)
	}
	for i := len(mag) - 1; i >= 0; i-- {
		b = append(b, mag[i])
	}
	return b
}

// ErrEncode is returned (wrapped) when a Go value has no Erlang form.
var ErrEncode = errors.New("erldist: cannot encode")

func appendTerm(b []byte, t Term, depth int) ([]byte, error) {
	if depth > maxDepth {
		return nil, fmt.Errorf("%w: nested too deep", ErrEncode)
	}
	var err error
	switch v := t.(type) {
	case nil:
		return append(b, tagNil), nil
	case Atom:
		if len(v) > math.MaxUint16 {
			return nil, fmt.Errorf("%w: atom longer than 65535 bytes", ErrEncode)
		}
		return appendAtom(b, v), nil
	case bool:
		if v {
			return appendAtom(b, "true"), nil
		}
		return appendAtom(b, "false"), nil
	case int:
		return appendInt(b, int64(v)), nil
	case int8:
		return appendInt(b, int64(v)), nil
	case int16:
		return appendInt(b, int64(v)), nil
	case int32:
		return appendInt(b, int64(v)), nil
	case int64:
		return appendInt(b, v), nil
	case uint8:
		return appendInt(b, int64(v)), nil
	case uint16:
		return appendInt(b, int64(v)), nil
	case uint32:
		return appendInt(b, int64(v)), nil
	case uint:
		return appendBig(b, new(big.Int).SetUint64(uint64(v))), nil
	case uint64:
		return appendBig(b, new(big.Int).SetUint64(v)), nil
	case *big.Int:
		return appendBig(b, v), nil
	case float64:
		b = append(b, tagNewFloat)
		return binary.BigEndian.AppendUint64(b, math.Float64bits(v)), nil
	case float32:
		b = append(b, tagNewFloat)
		return binary.BigEndian.AppendUint64(b, math.Float64bits(float64(v))), nil
	case []byte:
		b = append(b, tagBinary)
		b = binary.BigEndian.AppendUint32(b, uint32(len(v)))
		return append(b, v...), nil
	case string:
		b = append(b, tagBinary)
		b = binary.BigEndian.AppendUint32(b, uint32(len(v)))
		return append(b, v...), nil
	case BitBinary:
		if len(v.Data) == 0 || v.Bits < 1 || v.Bits > 8 {
			return nil, fmt.Errorf("%w: BitBinary needs data and 1..8 bits", ErrEncode)
		}
		b = append(b, tagBitBinary)
		b = binary.BigEndian.AppendUint32(b, uint32(len(v.Data)))
		b = append(b, v.Bits)
		return append(b, v.Data...), nil
	case Tuple:
		if len(v) < 256 {
			b = append(b, tagSmallTuple, byte(len(v)))
		} else {
			b = append(b, tagLargeTuple)
			b = binary.BigEndian.AppendUint32(b, uint32(len(v)))
		}
		for _, e := range v {
			if b, err = appendTerm(b, e, depth+1); err != nil {
				return nil, err
			}
		}
		return b, nil
	case List:
		if len(v) == 0 {
			return append(b, tagNil), nil
		}
		if s, ok := asString(v); ok { // what term_to_binary does for a list of bytes
			b = append(b, tagString)
			b = binary.BigEndian.AppendUint16(b, uint16(len(s)))
			return append(b, s...), nil
		}
		return appendList(b, v, nil, depth)
	case ImproperList:
		return appendList(b, v.Elems, v.Tail, depth)
	case Map:
		b = append(b, tagMap)
		b = binary.BigEndian.AppendUint32(b, uint32(len(v)))
		for _, p := range v {
			if b, err = appendTerm(b, p.Key, depth+1); err != nil {
				return nil, err
			}
			if b, err = appendTerm(b, p.Value, depth+1); err != nil {
				return nil, err
			}
		}
		return b, nil
	case Pid:
		b = append(b, tagNewPid)
		b = appendAtom(b, v.Node)
		b = binary.BigEndian.AppendUint32(b, v.ID)
		b = binary.BigEndian.AppendUint32(b, v.Serial)
		return binary.BigEndian.AppendUint32(b, v.Creation), nil
	case Port:
		if v.ID > math.MaxUint32 {
			b = append(b, tagV4Port)
			b = appendAtom(b, v.Node)
			b = binary.BigEndian.AppendUint64(b, v.ID)
		} else {
			b = append(b, tagNewPort)
			b = appendAtom(b, v.Node)
			b = binary.BigEndian.AppendUint32(b, uint32(v.ID))
		}
		return binary.BigEndian.AppendUint32(b, v.Creation), nil
	case Ref:
		if len(v.IDs) == 0 || len(v.IDs) > 5 {
			return nil, fmt.Errorf("%w: a reference has 1..5 words", ErrEncode)
		}
		b = append(b, tagNewerReference)
		b = binary.BigEndian.AppendUint16(b, uint16(len(v.IDs)))
		b = appendAtom(b, v.Node)
		b = binary.BigEndian.AppendUint32(b, v.Creation)
		for _, id := range v.IDs {
			b = binary.BigEndian.AppendUint32(b, id)
		}
		return b, nil
	case Export:
		b = append(b, tagExport)
		b = appendAtom(b, v.Module)
		b = appendAtom(b, v.Function)
		return append(b, tagSmallInteger, v.Arity), nil
	case Fun:
		b = append(b, tagNewFun)
		at := len(b)
		b = append(b, 0, 0, 0, 0, v.Arity)
		b = append(b, v.Uniq[:]...)
		b = binary.BigEndian.AppendUint32(b, v.Index)
		b = binary.BigEndian.AppendUint32(b, uint32(len(v.Free)))
		b = appendAtom(b, v.Module)
		for _, e := range append([]Term{v.OldIndex, v.OldUniq, v.Pid}, v.Free...) {
			if b, err = appendTerm(b, e, depth+1); err != nil {
				return nil, err
			}
		}
		binary.BigEndian.PutUint32(b[at:], uint32(len(b)-at))
		return b, nil
	}
	return nil, fmt.Errorf("%w: Go type %T", ErrEncode, t)
}

func asString(l List) ([]byte, bool) {
	if len(l) > math.MaxUint16 {
		return nil, false
	}
	s := make([]byte, 0, len(l))
	for _, e := range l {
		var v int64
		switch x := e.(type) {
		case int64:
			v = x
		case int:
			v = int64(x)
		default:
			return nil, false
		}
		if v < 0 || v > 255 {
			return nil, false
		}
		s = append(s, byte(v))
	}
	return s, true
}

func appendList(b []byte, elems []Term, tail Term, depth int) ([]byte, error) {
	b = append(b, tagList)
	b = binary.BigEndian.AppendUint32(b, uint32(len(elems)))
	var err error
	for _, e := range elems {
		if b, err = appendTerm(b, e, depth+1); err != nil {
			return nil, err
		}
	}
	return appendTerm(b, tail, depth+1)
}
