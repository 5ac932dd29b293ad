package flowbridge

// Encoding a handler's Go value as msgpack: common types take a fast type switch,
// everything else goes through reflection (structs use their `msgpack` or `json`
// tags, like encoding/json).

import (
	"encoding"
	"encoding/json"
	"fmt"
	"math"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// maxEncodeDepth stops runaway recursion (a map that contains itself). The bridge
// itself refuses data nested deeper than 100 levels (SPEC section 5).
const maxEncodeDepth = 1000

// KV is one entry of a Map.
type KV struct {
	Key   string
	Value any
}

// Map is a map whose entries are written in order. Result data given as a Go map
// is written with its keys sorted, as encoding/json does; use Map (or a struct)
// when the order should be your own.
type Map []KV

// EncodeError reports a value that cannot be written as msgpack.
type EncodeError struct {
	Path   string // where in the data, like $.readings[3]
	Reason string
}

func (e *EncodeError) Error() string { return e.Reason + " at " + e.Path }

// encoder writes Go values. On success it costs nothing beyond the bytes; on error
// the path to the offending value is built on the way back up.
type encoder struct{}

func (e *encoder) fail(reason string, args ...any) error {
	return &EncodeError{Path: "$", Reason: fmt.Sprintf(reason, args...)}
}

// at puts a map key (index < 0) or array index in front of err's path.
func at(err error, key string, index int) error {
	ee, ok := err.(*EncodeError)
	if !ok {
		return err
	}
	rest := strings.TrimPrefix(ee.Path, "$")
	if index >= 0 {
		ee.Path = "$[" + strconv.Itoa(index) + "]" + rest
	} else {
		ee.Path = "$." + key + rest
	}
	return ee
}

var (
	textMarshalerType = reflect.TypeFor[encoding.TextMarshaler]()
	jsonMarshalerType = reflect.TypeFor[json.Marshaler]()
)

// appendValue appends v as one msgpack value.
func (e *encoder) appendValue(b []byte, v any, depth int) ([]byte, error) {
	if depth > maxEncodeDepth {
		return b, e.fail("value is nested deeper than %d levels (does it contain itself?)", maxEncodeDepth)
	}
	switch v := v.(type) {
	case nil, null:
		return appendNil(b), nil
	case string:
		return appendText(b, v), nil
	case bool:
		return appendBool(b, v), nil
	case int:
		return appendInt(b, int64(v)), nil
	case int64:
		return appendInt(b, v), nil
	case int32:
		return appendInt(b, int64(v)), nil
	case int16:
		return appendInt(b, int64(v)), nil
	case int8:
		return appendInt(b, int64(v)), nil
	case uint:
		return appendUint(b, uint64(v)), nil
	case uint64:
		return appendUint(b, v), nil
	case uint32:
		return appendUint(b, uint64(v)), nil
	case uint16:
		return appendUint(b, uint64(v)), nil
	case uint8:
		return appendUint(b, uint64(v)), nil
	case float64:
		return appendFloat64(b, v), nil
	case float32:
		return appendFloat32(b, v), nil
	case []byte:
		if v == nil {
			return appendNil(b), nil
		}
		return appendBin(b, v), nil
	case json.Number:
		return appendNumber(b, v), nil
	case json.RawMessage:
		return e.appendJSON(b, v, depth)
	case time.Time:
		return appendStr(b, v.Format(time.RFC3339Nano)), nil
	case time.Duration:
		return appendInt(b, int64(v)), nil
	case map[string]any:
		if v == nil {
			return appendNil(b), nil
		}
		return e.appendStringMap(b, v, depth)
	case Map:
		if v == nil {
			return appendNil(b), nil
		}
		b = appendMapHeader(b, len(v))
		var err error
		for _, kv := range v {
			b = appendText(b, kv.Key)
			if b, err = e.appendValue(b, kv.Value, depth+1); err != nil {
				return b, at(err, kv.Key, -1)
			}
		}
		return b, nil
	case []any:
		if v == nil {
			return appendNil(b), nil
		}
		b = appendArrayHeader(b, len(v))
		var err error
		for i, item := range v {
			if b, err = e.appendValue(b, item, depth+1); err != nil {
				return b, at(err, "", i)
			}
		}
		return b, nil
	case []string:
		if v == nil {
			return appendNil(b), nil
		}
		b = appendArrayHeader(b, len(v))
		for _, s := range v {
			b = appendText(b, s)
		}
		return b, nil
	case map[string]string:
		if v == nil {
			return appendNil(b), nil
		}
		keys := sortedKeys(v)
		b = appendMapHeader(b, len(keys))
		for _, k := range keys {
			b = appendText(appendText(b, k), v[k])
		}
		return b, nil
	case ext:
		return appendExt(b, v), nil
	case error:
		// An error has no data form of its own; its text is the useful part.
		return appendText(b, v.Error()), nil
	}
	return e.appendReflect(b, reflect.ValueOf(v), depth)
}

func appendExt(b []byte, v ext) []byte {
	switch len(v.Data) {
	case 1:
		b = append(b, 0xd4)
	case 2:
		b = append(b, 0xd5)
	case 4:
		b = append(b, 0xd6)
	case 8:
		b = append(b, 0xd7)
	case 16:
		b = append(b, 0xd8)
	default:
		switch n := len(v.Data); {
		case n <= math.MaxUint8:
			b = append(b, 0xc7, byte(n))
		case n <= math.MaxUint16:
			b = append(b, 0xc8, byte(n>>8), byte(n))
		default:
			b = append(b, 0xc9, byte(n>>24), byte(n>>16), byte(n>>8), byte(n))
		}
	}
	return append(append(b, byte(v.Type)), v.Data...)
}

// appendNumber writes a JSON number as an int when it is one, else as a float.
func appendNumber(b []byte, n json.Number) []byte {
	s := string(n)
	if i, err := strconv.ParseInt(s, 10, 64); err == nil {
		return appendInt(b, i)
	}
	if u, err := strconv.ParseUint(s, 10, 64); err == nil {
		return appendUint(b, u)
	}
	f, _ := strconv.ParseFloat(s, 64)
	return appendFloat64(b, f)
}

// appendJSON writes a JSON text as the msgpack value it denotes.
func (e *encoder) appendJSON(b []byte, raw []byte, depth int) ([]byte, error) {
	v, err := parseJSON(raw)
	if err != nil {
		return b, e.fail("invalid JSON: %v", err)
	}
	return e.appendValue(b, v, depth)
}

// sortedKeys returns the keys of m in order; small maps use no heap memory.
func sortedKeys[V any](m map[string]V) []string {
	var small [16]string
	keys := small[:0]
	if len(m) > len(small) {
		keys = make([]string, 0, len(m))
	}
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

func (e *encoder) appendStringMap(b []byte, m map[string]any, depth int) ([]byte, error) {
	b = appendMapHeader(b, len(m))
	var err error
	if len(m) == 1 {
		for k, v := range m {
			b = appendText(b, k)
			if b, err = e.appendValue(b, v, depth+1); err != nil {
				return b, at(err, k, -1)
			}
		}
		return b, nil
	}
	for _, k := range sortedKeys(m) {
		b = appendText(b, k)
		if b, err = e.appendValue(b, m[k], depth+1); err != nil {
			return b, at(err, k, -1)
		}
	}
	return b, nil
}

func (e *encoder) appendReflect(b []byte, v reflect.Value, depth int) ([]byte, error) {
	if depth > maxEncodeDepth {
		return b, e.fail("value is nested deeper than %d levels (does it contain itself?)", maxEncodeDepth)
	}
	if !v.IsValid() {
		return appendNil(b), nil
	}
	t := v.Type()
	// Marshalers first, as encoding/json does: a type that knows its text form wins.
	if t.Implements(jsonMarshalerType) && t != reflect.TypeFor[json.Number]() {
		if (t.Kind() == reflect.Pointer || t.Kind() == reflect.Interface) && v.IsNil() {
			return appendNil(b), nil
		}
		raw, err := v.Interface().(json.Marshaler).MarshalJSON()
		if err != nil {
			return b, e.fail("%s.MarshalJSON: %v", t, err)
		}
		return e.appendJSON(b, raw, depth)
	}
	if t.Implements(textMarshalerType) {
		if (t.Kind() == reflect.Pointer || t.Kind() == reflect.Interface) && v.IsNil() {
			return appendNil(b), nil
		}
		text, err := v.Interface().(encoding.TextMarshaler).MarshalText()
		if err != nil {
			return b, e.fail("%s.MarshalText: %v", t, err)
		}
		return appendText(b, string(text)), nil
	}
	var err error
	switch t.Kind() {
	case reflect.Bool:
		return appendBool(b, v.Bool()), nil
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return appendInt(b, v.Int()), nil
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uintptr:
		return appendUint(b, v.Uint()), nil
	case reflect.Float32:
		return appendFloat32(b, float32(v.Float())), nil
	case reflect.Float64:
		return appendFloat64(b, v.Float()), nil
	case reflect.String:
		return appendText(b, v.String()), nil
	case reflect.Pointer, reflect.Interface:
		if v.IsNil() {
			return appendNil(b), nil
		}
		return e.appendValue(b, v.Elem().Interface(), depth+1)
	case reflect.Slice:
		if v.IsNil() {
			return appendNil(b), nil
		}
		if t.Elem().Kind() == reflect.Uint8 {
			return appendBin(b, v.Bytes()), nil
		}
		fallthrough
	case reflect.Array:
		n := v.Len()
		b = appendArrayHeader(b, n)
		for i := 0; i < n; i++ {
			if b, err = e.appendValue(b, v.Index(i).Interface(), depth+1); err != nil {
				return b, at(err, "", i)
			}
		}
		return b, nil
	case reflect.Map:
		if v.IsNil() {
			return appendNil(b), nil
		}
		return e.appendMap(b, v, depth)
	case reflect.Struct:
		fields := structFields(t)
		count := 0
		for i := range fields {
			if fv, ok := fields[i].get(v); ok && !(fields[i].omitEmpty && fv.IsZero()) {
				count++
			}
		}
		b = appendMapHeader(b, count)
		for i := range fields {
			f := &fields[i]
			fv, ok := f.get(v)
			if !ok || (f.omitEmpty && fv.IsZero()) {
				continue
			}
			b = appendText(b, f.name)
			if b, err = e.appendValue(b, fv.Interface(), depth+1); err != nil {
				return b, at(err, f.name, -1)
			}
		}
		return b, nil
	}
	return b, e.fail("a Go %s has no msgpack form", t)
}

// appendMap writes a map with str keys (sorted) or integer keys (sorted by value).
func (e *encoder) appendMap(b []byte, v reflect.Value, depth int) ([]byte, error) {
	t := v.Type()
	kt := t.Key()
	type entry struct {
		name  string // for str keys and the path
		key   reflect.Value
		isInt bool // written as a msgpack int
	}
	entries := make([]entry, 0, v.Len())
	iter := v.MapRange()
	for iter.Next() {
		k := iter.Key()
		var name string
		isInt := false
		switch {
		case kt.Kind() == reflect.String:
			name = k.String()
		case kt.Implements(textMarshalerType):
			text, err := k.Interface().(encoding.TextMarshaler).MarshalText()
			if err != nil {
				return b, e.fail("map key %s.MarshalText: %v", kt, err)
			}
			name = string(text)
		case kt.Kind() >= reflect.Int && kt.Kind() <= reflect.Int64:
			name, isInt = strconv.FormatInt(k.Int(), 10), true
		case kt.Kind() >= reflect.Uint && kt.Kind() <= reflect.Uintptr:
			name, isInt = strconv.FormatUint(k.Uint(), 10), true
		case kt.Kind() == reflect.Interface:
			switch kv := k.Interface().(type) {
			case string:
				name = kv
			case int, int8, int16, int32, int64, uint, uint8, uint16, uint32, uint64:
				name, isInt = fmt.Sprint(kv), true
			default:
				return b, e.fail("map key %v of type %T has no JSON form; use string keys", kv, kv)
			}
		default:
			return b, e.fail("map key type %s has no JSON form; use string keys", kt)
		}
		entries = append(entries, entry{name, k, isInt})
	}
	slices.SortFunc(entries, func(a, b entry) int { return strings.Compare(a.name, b.name) })
	b = appendMapHeader(b, len(entries))
	var err error
	for _, en := range entries {
		k := en.key
		if kt.Kind() == reflect.Interface {
			k = k.Elem()
		}
		switch {
		case !en.isInt:
			b = appendText(b, en.name)
		case k.CanInt():
			b = appendInt(b, k.Int())
		default:
			b = appendUint(b, k.Uint())
		}
		if b, err = e.appendValue(b, v.MapIndex(en.key).Interface(), depth+1); err != nil {
			return b, at(err, en.name, -1)
		}
	}
	return b, nil
}

// field is one exported struct field, as encoding/json would see it.
type field struct {
	name      string
	index     []int
	omitEmpty bool
}

// get returns the field's value; ok is false when it sits behind a nil embedded pointer.
func (f *field) get(v reflect.Value) (reflect.Value, bool) {
	for i, x := range f.index {
		if i > 0 && v.Kind() == reflect.Pointer {
			if v.IsNil() {
				return reflect.Value{}, false
			}
			v = v.Elem()
		}
		v = v.Field(x)
	}
	return v, true
}

var fieldCache sync.Map // reflect.Type -> []field

// structFields lists the fields encoding/json would write for struct type t:
// exported ones, under their tag name, with embedded structs' fields promoted
// (a shallower field hides a deeper one of the same name).
func structFields(t reflect.Type) []field {
	if f, ok := fieldCache.Load(t); ok {
		return f.([]field)
	}
	var all []field
	var walk func(t reflect.Type, index []int, depth int)
	walk = func(t reflect.Type, index []int, depth int) {
		if depth > 10 {
			return
		}
		for i := 0; i < t.NumField(); i++ {
			sf := t.Field(i)
			tag, ok := sf.Tag.Lookup("msgpack")
			if !ok {
				tag = sf.Tag.Get("json")
			}
			if tag == "-" {
				continue
			}
			name, opts, _ := strings.Cut(tag, ",")
			idx := append(slices.Clone(index), i)
			ft := sf.Type
			if ft.Kind() == reflect.Pointer {
				ft = ft.Elem()
			}
			if sf.Anonymous && name == "" && ft.Kind() == reflect.Struct {
				walk(ft, idx, depth+1)
				continue
			}
			if !sf.IsExported() {
				continue
			}
			if name == "" {
				name = sf.Name
			}
			opts = "," + opts + ","
			omit := strings.Contains(opts, ",omitempty,") || strings.Contains(opts, ",omitzero,")
			all = append(all, field{name: name, index: idx, omitEmpty: omit})
		}
	}
	walk(t, nil, 0)
	var out []field
	for i, f := range all {
		hidden := false
		for j, g := range all {
			if j != i && g.name == f.name && (len(g.index) < len(f.index) || (len(g.index) == len(f.index) && j < i)) {
				hidden = true
				break
			}
		}
		if !hidden {
			out = append(out, f)
		}
	}
	f, _ := fieldCache.LoadOrStore(t, out)
	return f.([]field)
}
