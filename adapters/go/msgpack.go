package flowbridge

// The small part of msgpack the protocol needs, written by hand: the encoder always
// picks the shortest form (SPEC section 1, "canonical form") and the decoder works on
// a frame body that is never modified after it is read, so strings and byte slices
// can point into it instead of being copied.

import (
	"encoding/binary"
	"math"
	"unicode/utf8"
	"unsafe"
)

// ---------------------------------------------------------------------------
// Encoding: append functions, in the style of strconv.Append*.

func appendNil(b []byte) []byte { return append(b, 0xc0) }

func appendBool(b []byte, v bool) []byte {
	if v {
		return append(b, 0xc3)
	}
	return append(b, 0xc2)
}

func appendUint(b []byte, v uint64) []byte {
	switch {
	case v <= 0x7f:
		return append(b, byte(v))
	case v <= math.MaxUint8:
		return append(b, 0xcc, byte(v))
	case v <= math.MaxUint16:
		return append(b, 0xcd, byte(v>>8), byte(v))
	case v <= math.MaxUint32:
		return binary.BigEndian.AppendUint32(append(b, 0xce), uint32(v))
	default:
		return binary.BigEndian.AppendUint64(append(b, 0xcf), v)
	}
}

func appendInt(b []byte, v int64) []byte {
	if v >= 0 {
		return appendUint(b, uint64(v))
	}
	switch {
	case v >= -32:
		return append(b, byte(v))
	case v >= math.MinInt8:
		return append(b, 0xd0, byte(v))
	case v >= math.MinInt16:
		return append(b, 0xd1, byte(v>>8), byte(v))
	case v >= math.MinInt32:
		return binary.BigEndian.AppendUint32(append(b, 0xd2), uint32(v))
	default:
		return binary.BigEndian.AppendUint64(append(b, 0xd3), uint64(v))
	}
}

func appendFloat64(b []byte, v float64) []byte {
	return binary.BigEndian.AppendUint64(append(b, 0xcb), math.Float64bits(v))
}

func appendFloat32(b []byte, v float32) []byte {
	return binary.BigEndian.AppendUint32(append(b, 0xca), math.Float32bits(v))
}

func appendStrHeader(b []byte, n int) []byte {
	switch {
	case n <= 31:
		return append(b, 0xa0|byte(n))
	case n <= math.MaxUint8:
		return append(b, 0xd9, byte(n))
	case n <= math.MaxUint16:
		return append(b, 0xda, byte(n>>8), byte(n))
	default:
		return binary.BigEndian.AppendUint32(append(b, 0xdb), uint32(n))
	}
}

func appendStr(b []byte, s string) []byte {
	return append(appendStrHeader(b, len(s)), s...)
}

// appendText writes s as a msgpack str, replacing invalid UTF-8 with U+FFFD: a str
// must hold valid UTF-8 (SPEC section 1), and a Go string may not.
func appendText(b []byte, s string) []byte {
	if utf8.ValidString(s) {
		return appendStr(b, s)
	}
	return appendStr(b, toValidUTF8(s))
}

func toValidUTF8(s string) string {
	out := make([]rune, 0, len(s))
	for _, r := range s { // ranging over a string yields U+FFFD for each bad byte
		out = append(out, r)
	}
	return string(out)
}

func appendBinHeader(b []byte, n int) []byte {
	switch {
	case n <= math.MaxUint8:
		return append(b, 0xc4, byte(n))
	case n <= math.MaxUint16:
		return append(b, 0xc5, byte(n>>8), byte(n))
	default:
		return binary.BigEndian.AppendUint32(append(b, 0xc6), uint32(n))
	}
}

func appendBin(b []byte, v []byte) []byte {
	return append(appendBinHeader(b, len(v)), v...)
}

func appendArrayHeader(b []byte, n int) []byte {
	switch {
	case n <= 15:
		return append(b, 0x90|byte(n))
	case n <= math.MaxUint16:
		return append(b, 0xdc, byte(n>>8), byte(n))
	default:
		return binary.BigEndian.AppendUint32(append(b, 0xdd), uint32(n))
	}
}

func appendMapHeader(b []byte, n int) []byte {
	switch {
	case n <= 15:
		return append(b, 0x80|byte(n))
	case n <= math.MaxUint16:
		return append(b, 0xde, byte(n>>8), byte(n))
	default:
		return binary.BigEndian.AppendUint32(append(b, 0xdf), uint32(n))
	}
}

// ---------------------------------------------------------------------------
// Decoding.

// mpKind is the family of a msgpack value, as seen from its first byte.
type mpKind uint8

const (
	kindInvalid mpKind = iota
	kindNil
	kindBool
	kindInt // any integer, signed or not
	kindFloat
	kindStr
	kindBin
	kindArray
	kindMap
	kindExt
)

// kindOf returns the family of the value that starts with byte c.
func kindOf(c byte) mpKind {
	switch {
	case c <= 0x7f, c >= 0xe0:
		return kindInt
	case c <= 0x8f:
		return kindMap
	case c <= 0x9f:
		return kindArray
	case c <= 0xbf:
		return kindStr
	}
	switch c {
	case 0xc0:
		return kindNil
	case 0xc2, 0xc3:
		return kindBool
	case 0xc4, 0xc5, 0xc6:
		return kindBin
	case 0xc7, 0xc8, 0xc9, 0xd4, 0xd5, 0xd6, 0xd7, 0xd8:
		return kindExt
	case 0xca, 0xcb:
		return kindFloat
	case 0xcc, 0xcd, 0xce, 0xcf, 0xd0, 0xd1, 0xd2, 0xd3:
		return kindInt
	case 0xd9, 0xda, 0xdb:
		return kindStr
	case 0xdc, 0xdd:
		return kindArray
	case 0xde, 0xdf:
		return kindMap
	}
	return kindInvalid // 0xc1, never used
}

// errMsgpack is returned by the low-level readers; callers turn it into a
// ProtocolError of the right kind.
type mpError string

func (e mpError) Error() string { return string(e) }

const (
	errShort     mpError = "msgpack value runs past the end of the frame"
	errBadByte   mpError = "invalid msgpack byte 0xc1"
	errBadUTF8   mpError = "msgpack str holds invalid UTF-8"
	errTooDeep   mpError = "msgpack value nested too deeply"
	errWrongKind mpError = "msgpack value has another type"
	errIntRange  mpError = "msgpack integer out of range"
	maxSkipDepth         = 512
)

// decoder reads msgpack values from a byte slice that nobody modifies afterwards.
type decoder struct {
	b   []byte
	off int
}

func (d *decoder) peek() (byte, error) {
	if d.off >= len(d.b) {
		return 0, errShort
	}
	return d.b[d.off], nil
}

// take returns the next n bytes, capped so that appending to them cannot overwrite
// what follows.
func (d *decoder) take(n int) ([]byte, error) {
	if n < 0 || len(d.b)-d.off < n {
		return nil, errShort
	}
	p := d.b[d.off : d.off+n : d.off+n]
	d.off += n
	return p, nil
}

func (d *decoder) uintN(n int) (uint64, error) {
	p, err := d.take(n)
	if err != nil {
		return 0, err
	}
	switch n {
	case 1:
		return uint64(p[0]), nil
	case 2:
		return uint64(binary.BigEndian.Uint16(p)), nil
	case 4:
		return uint64(binary.BigEndian.Uint32(p)), nil
	default:
		return binary.BigEndian.Uint64(p), nil
	}
}

// header reads a value's first byte and, for containers, str, bin and ext, its length
// (for ext the length excludes the type byte). For other kinds n is 0.
func (d *decoder) header() (c byte, k mpKind, n int, err error) {
	c, err = d.peek()
	if err != nil {
		return
	}
	d.off++
	k = kindOf(c)
	var size int // bytes of length that follow
	switch {
	case k == kindInvalid:
		return c, k, 0, errBadByte
	case c >= 0x80 && c <= 0x8f:
		return c, k, int(c & 0x0f), nil
	case c >= 0x90 && c <= 0x9f:
		return c, k, int(c & 0x0f), nil
	case c >= 0xa0 && c <= 0xbf:
		return c, k, int(c & 0x1f), nil
	}
	switch c {
	case 0xc4, 0xc7, 0xd9:
		size = 1
	case 0xc5, 0xc8, 0xda, 0xdc, 0xde:
		size = 2
	case 0xc6, 0xc9, 0xdb, 0xdd, 0xdf:
		size = 4
	case 0xd4:
		return c, k, 1, nil
	case 0xd5:
		return c, k, 2, nil
	case 0xd6:
		return c, k, 4, nil
	case 0xd7:
		return c, k, 8, nil
	case 0xd8:
		return c, k, 16, nil
	default:
		return c, k, 0, nil
	}
	v, err := d.uintN(size)
	if err != nil {
		return c, k, 0, err
	}
	if v > uint64(len(d.b)) { // cannot fit; also keeps int conversion safe
		return c, k, 0, errShort
	}
	return c, k, int(v), nil
}

// intBody reads the rest of an integer whose first byte c has been consumed.
// neg reports a negative value, held in i; otherwise the value is u.
func (d *decoder) intBody(c byte) (u uint64, i int64, neg bool, err error) {
	switch {
	case c <= 0x7f:
		return uint64(c), 0, false, nil
	case c >= 0xe0:
		return 0, int64(int8(c)), true, nil
	}
	switch c {
	case 0xcc:
		u, err = d.uintN(1)
	case 0xcd:
		u, err = d.uintN(2)
	case 0xce:
		u, err = d.uintN(4)
	case 0xcf:
		u, err = d.uintN(8)
	case 0xd0:
		u, err = d.uintN(1)
		i = int64(int8(u))
	case 0xd1:
		u, err = d.uintN(2)
		i = int64(int16(u))
	case 0xd2:
		u, err = d.uintN(4)
		i = int64(int32(u))
	case 0xd3:
		u, err = d.uintN(8)
		i = int64(u)
	}
	if err != nil {
		return 0, 0, false, err
	}
	if c >= 0xd0 {
		if i < 0 {
			return 0, i, true, nil
		}
		return uint64(i), 0, false, nil
	}
	return u, 0, false, nil
}

// skip reads past one value, checking that it is well formed (including the UTF-8 of
// every str) without building anything.
func (d *decoder) skip(depth int) error {
	c, k, n, err := d.header()
	if err != nil {
		return err
	}
	switch k {
	case kindNil, kindBool:
		return nil
	case kindInt:
		_, _, _, err = d.intBody(c)
		return err
	case kindFloat:
		if c == 0xca {
			_, err = d.take(4)
		} else {
			_, err = d.take(8)
		}
		return err
	case kindStr:
		p, err := d.take(n)
		if err != nil {
			return err
		}
		if !utf8.Valid(p) {
			return errBadUTF8
		}
		return nil
	case kindBin:
		_, err = d.take(n)
		return err
	case kindExt:
		_, err = d.take(n + 1)
		return err
	case kindArray, kindMap:
		if depth >= maxSkipDepth {
			return errTooDeep
		}
		items := n
		if k == kindMap {
			items = 2 * n
		}
		for j := 0; j < items; j++ {
			if err := d.skip(depth + 1); err != nil {
				return err
			}
		}
		return nil
	}
	return errBadByte
}

// The typed readers below expect a value that skip has already validated, so they
// only have to check its kind and range.

// str returns a string that shares the decoder's bytes: the frame body must not
// change for as long as the string is in use.
func (d *decoder) str() (string, error) {
	_, k, n, err := d.header()
	if err != nil {
		return "", err
	}
	if k != kindStr {
		return "", errWrongKind
	}
	p, err := d.take(n)
	if err != nil {
		return "", err
	}
	if n == 0 {
		return "", nil
	}
	return unsafe.String(&p[0], n), nil
}

func (d *decoder) bin() ([]byte, error) {
	_, k, n, err := d.header()
	if err != nil {
		return nil, err
	}
	if k != kindBin {
		return nil, errWrongKind
	}
	return d.take(n)
}

func (d *decoder) boolean() (bool, error) {
	c, err := d.peek()
	if err != nil {
		return false, err
	}
	if c != 0xc2 && c != 0xc3 {
		return false, errWrongKind
	}
	d.off++
	return c == 0xc3, nil
}

// integer reads an int; neg reports a negative value held in i, otherwise u holds it.
func (d *decoder) integer() (u uint64, i int64, neg bool, err error) {
	c, err := d.peek()
	if err != nil {
		return 0, 0, false, err
	}
	if kindOf(c) != kindInt {
		return 0, 0, false, errWrongKind
	}
	d.off++
	return d.intBody(c)
}

// uintIn reads a non-negative int no greater than max.
func (d *decoder) uintIn(lo, hi uint64) (uint64, error) {
	u, _, neg, err := d.integer()
	if err != nil {
		return 0, err
	}
	if neg || u < lo || u > hi {
		return 0, errIntRange
	}
	return u, nil
}

// value decodes any value into Go: nil, bool, int64 or uint64 (uint64 only above
// MaxInt64), float64, string, []byte, []any, map[string]any (or map[any]any when
// a key is not a str) and ext.
func (d *decoder) value(depth int) (any, error) {
	c, k, n, err := d.header()
	if err != nil {
		return nil, err
	}
	switch k {
	case kindNil:
		return nil, nil
	case kindBool:
		return c == 0xc3, nil
	case kindInt:
		u, i, neg, err := d.intBody(c)
		if err != nil {
			return nil, err
		}
		if neg {
			return i, nil
		}
		if u <= math.MaxInt64 {
			return int64(u), nil
		}
		return u, nil
	case kindFloat:
		if c == 0xca {
			v, err := d.uintN(4)
			return float64(math.Float32frombits(uint32(v))), err
		}
		v, err := d.uintN(8)
		return math.Float64frombits(v), err
	case kindStr:
		p, err := d.take(n)
		if err != nil {
			return nil, err
		}
		if !utf8.Valid(p) {
			return nil, errBadUTF8
		}
		return string(p), nil
	case kindBin:
		p, err := d.take(n)
		if err != nil {
			return nil, err
		}
		return append([]byte{}, p...), nil
	case kindExt:
		p, err := d.take(n + 1)
		if err != nil {
			return nil, err
		}
		return ext{Type: int8(p[0]), Data: append([]byte{}, p[1:]...)}, nil
	case kindArray:
		if depth >= maxSkipDepth {
			return nil, errTooDeep
		}
		out := make([]any, 0, min(n, len(d.b)-d.off))
		for j := 0; j < n; j++ {
			v, err := d.value(depth + 1)
			if err != nil {
				return nil, err
			}
			out = append(out, v)
		}
		return out, nil
	case kindMap:
		if depth >= maxSkipDepth {
			return nil, errTooDeep
		}
		m := make(map[string]any, min(n, (len(d.b)-d.off)/2))
		var other map[any]any
		for j := 0; j < n; j++ {
			key, err := d.value(depth + 1)
			if err != nil {
				return nil, err
			}
			v, err := d.value(depth + 1)
			if err != nil {
				return nil, err
			}
			if s, ok := key.(string); ok && other == nil {
				m[s] = v
				continue
			}
			if other == nil {
				other = make(map[any]any, n)
				for ks, kv := range m {
					other[ks] = kv
				}
			}
			switch key.(type) {
			case []any, map[string]any, map[any]any, []byte, ext:
				key = &mapKey{key} // not hashable in Go; boxed, so compared by identity
			}
			other[key] = v
		}
		if other != nil {
			return other, nil
		}
		return m, nil
	}
	return nil, errBadByte
}

// mapKey holds a map key that Go cannot use as one (an array, a map, bytes).
type mapKey struct{ V any }

// ext is a msgpack extension value. The bridge refuses ext values in result data
// (SPEC section 5); the type exists so that decoding never loses one.
type ext struct {
	Type int8
	Data []byte
}
