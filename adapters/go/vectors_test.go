package flowbridge

import (
	"bufio"
	"bytes"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"reflect"
	"strconv"
	"testing"
)

// The shared test vectors (SPEC section 7, "Test vectors").

type vectors struct {
	DefaultMaxFrame uint64 `json:"default_max_frame"`
	Valid           []struct {
		Name      string          `json:"name"`
		Direction string          `json:"direction"`
		Hex       string          `json:"hex"`
		Value     json.RawMessage `json:"value"`
		Canonical bool            `json:"canonical"`
	} `json:"valid"`
	Invalid []struct {
		Name     string `json:"name"`
		Hex      string `json:"hex"`
		Error    string `json:"error"`
		MaxFrame uint64 `json:"max_frame"`
	} `json:"invalid"`
	JSON []struct {
		Name       string `json:"name"`
		MsgpackHex string `json:"msgpack_hex"`
	} `json:"json"`
	Sequences []sequence `json:"sequences"`
}

// sequence is a series of frames, each from one side, and what each side must make
// of it: the receiver an event of that type (Event) or an error of that kind (Error).
type sequence struct {
	Name  string `json:"name"`
	About string `json:"about"`
	Steps []struct {
		From  string `json:"from"`
		Hex   string `json:"hex"`
		Value struct {
			Type string `json:"type"`
		} `json:"value"`
		Event string `json:"event"`
		Error string `json:"error"`
	} `json:"steps"`
}

func loadVectors(t *testing.T) *vectors {
	t.Helper()
	raw, err := os.ReadFile("../../protocol/vectors.json")
	if err != nil {
		t.Fatalf("read vectors: %v", err)
	}
	var v vectors
	if err := json.Unmarshal(raw, &v); err != nil {
		t.Fatalf("parse vectors: %v", err)
	}
	if len(v.Valid) == 0 || len(v.Invalid) == 0 {
		t.Fatal("no vectors")
	}
	return &v
}

func unhex(t *testing.T, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatalf("bad hex %q: %v", s, err)
	}
	return b
}

// parseOrdered parses a vector's JSON value keeping object order (as Map), numbers
// as json.Number and {"$bin": hex} as []byte.
func parseOrdered(raw []byte) (any, error) {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var parse func() (any, error)
	parse = func() (any, error) {
		tok, err := dec.Token()
		if err != nil {
			return nil, err
		}
		switch tok := tok.(type) {
		case json.Delim:
			if tok == '[' {
				out := []any{}
				for dec.More() {
					v, err := parse()
					if err != nil {
						return nil, err
					}
					out = append(out, v)
				}
				_, err := dec.Token()
				return out, err
			}
			out := Map{}
			for dec.More() {
				k, err := dec.Token()
				if err != nil {
					return nil, err
				}
				v, err := parse()
				if err != nil {
					return nil, err
				}
				out = append(out, KV{k.(string), v})
			}
			if _, err := dec.Token(); err != nil {
				return nil, err
			}
			if len(out) == 1 && out[0].Key == "$bin" {
				return hex.DecodeString(out[0].Value.(string))
			}
			return out, nil
		default:
			return tok, nil
		}
	}
	return parse()
}

// norm makes decoded msgpack values and parsed vector values comparable.
func norm(v any) any {
	switch v := v.(type) {
	case Map:
		m := make(map[string]any, len(v))
		for _, kv := range v {
			m[kv.Key] = norm(kv.Value)
		}
		return m
	case map[string]any:
		m := make(map[string]any, len(v))
		for k, x := range v {
			m[k] = norm(x)
		}
		return m
	case []any:
		out := make([]any, len(v))
		for i, x := range v {
			out[i] = norm(x)
		}
		return out
	case json.Number:
		if i, err := strconv.ParseInt(string(v), 10, 64); err == nil {
			return i
		}
		if u, err := strconv.ParseUint(string(v), 10, 64); err == nil {
			return u
		}
		f, _ := v.Float64()
		return f
	case []byte:
		if v == nil {
			return []byte{}
		}
	}
	return v
}

func get(m Map, key string) (any, bool) {
	for _, kv := range m {
		if kv.Key == key {
			return kv.Value, true
		}
	}
	return nil, false
}

// typedView lists a decoded message's fields of its type as a map, for comparison
// with a vector's value.
func typedView(m *message) map[string]any {
	out := map[string]any{"type": m.typ}
	for _, f := range specOf(m.typ).fields {
		var v any
		switch f {
		case fProtocols:
			p := make([]any, len(m.protocols))
			for i, x := range m.protocols {
				p[i] = int64(x)
			}
			v = p
		case fPlugin:
			v = m.plugin
		case fPluginType:
			if m.typ == "ready" && m.pluginType == "" {
				continue // not declared
			}
			v = m.pluginType
		case fMaxFrame:
			v = int64(m.maxFrame)
		case fBridge:
			v = m.bridge
		case fProtocol:
			v = int64(m.protocol)
		case fConcurrency:
			v = int64(m.concurrency)
		case fDebug:
			v = m.debug
		case fName:
			v = m.name
		case fVersion:
			v = m.version
		case fID:
			if !m.hasID {
				continue
			}
			v = int64(m.id)
		case fConfig:
			v = []byte(m.config)
		case fProjectID:
			v = m.projectID
		case fFlowID:
			v = m.flowID
		case fJob:
			v = m.job
		case fElementID:
			v = m.elementID
		case fElementJob:
			v = m.elementJob
		case fTimeoutMS:
			v = int64(m.timeoutMS)
		case fData:
			switch {
			case m.hasData:
				v = m.data
			case m.typ == "error":
				continue // no data
			default:
				v = map[string]any{}
			}
		case fMessage:
			v = m.message
		case fDetail:
			v = m.detail
		case fLevel:
			v = m.level
		case fMsg:
			v = m.msg
		case fTime:
			v = m.time
		case fReason:
			v = m.reason
		case fConnected:
			v = m.connected
		}
		out[fieldNames[f]] = norm(v)
	}
	return out
}

// defaults of the optional fields (SPEC section 3), as typedView shows them.
var defaults = map[string]any{
	"plugin_type": "service", "max_frame": int64(DefaultMaxFrame), "bridge": "",
	"concurrency": int64(1), "debug": false, "name": "", "version": "",
	"project_id": "", "flow_id": "", "job": "", "element_id": "", "element_job": "", "timeout_ms": int64(0),
	"data": map[string]any{}, "message": "", "detail": "", "time": "", "reason": "timeout",
}

func readOne(t *testing.T, frame []byte) ([]byte, *message) {
	t.Helper()
	br := bufio.NewReader(bytes.NewReader(frame))
	body, err := readFrame(br, DefaultMaxFrame)
	if err != nil {
		t.Fatalf("readFrame: %v", err)
	}
	if _, err := readFrame(br, DefaultMaxFrame); err != io.EOF {
		t.Fatalf("bytes after the frame: %v", err)
	}
	var m message
	if err := decodeMessage(body, &m); err != nil {
		t.Fatalf("decode: %v", err)
	}
	return body, &m
}

func TestVectorsDecode(t *testing.T) {
	v := loadVectors(t)
	if v.DefaultMaxFrame != DefaultMaxFrame {
		t.Errorf("default_max_frame %d, adapter uses %d", v.DefaultMaxFrame, DefaultMaxFrame)
	}
	n := 0
	for _, vec := range v.Valid {
		t.Run(vec.Name, func(t *testing.T) {
			want, err := parseOrdered(vec.Value)
			if err != nil {
				t.Fatalf("value: %v", err)
			}
			body, m := readOne(t, unhex(t, vec.Hex))
			// Everything in the frame, unknown keys included, as a generic value.
			d := decoder{b: body}
			got, err := d.value(0)
			if err != nil {
				t.Fatalf("generic decode: %v", err)
			}
			if !reflect.DeepEqual(norm(got), norm(want)) {
				t.Errorf("generic decode\n got %#v\nwant %#v", norm(got), norm(want))
			}
			// The typed message: each field as in value, or its default when absent.
			wm := want.(Map)
			typed := typedView(m)
			for key, gv := range typed {
				wv, ok := get(wm, key)
				var expect any
				if ok {
					expect = norm(wv)
				} else if expect, ok = defaults[key]; !ok {
					t.Errorf("field %s: absent from the vector and has no default", key)
					continue
				}
				if !reflect.DeepEqual(gv, expect) {
					t.Errorf("field %s: got %#v, want %#v", key, gv, expect)
				}
			}
			if vec.Direction == "to_child" {
				n++
			}
		})
	}
	if n == 0 {
		t.Error("no to_child vectors")
	}
}

// encodeVector encodes a to_bridge message from its vector value, the way the
// adapter writes that message.
func encodeVector(t *testing.T, m Map) []byte {
	typ, _ := get(m, "type")
	str := func(k string) string {
		v, _ := get(m, k)
		s, _ := v.(string)
		return s
	}
	num := func(k string, def uint64) uint64 {
		v, ok := get(m, k)
		if !ok {
			return def
		}
		u, err := strconv.ParseUint(string(v.(json.Number)), 10, 64)
		if err != nil {
			t.Fatalf("%s: %v", k, err)
		}
		return u
	}
	switch typ {
	case "ready":
		debug, _ := get(m, "debug")
		d, _ := debug.(bool)
		return appendReady(nil, num("protocol", 0), num("concurrency", 1), d, str("name"), str("version"), PluginType(str("plugin_type")))
	case "result":
		b, start := appendResultHead(nil, num("id", 0))
		data, ok := get(m, "data")
		if !ok {
			data = Map{}
		}
		var enc encoder
		b, err := enc.appendValue(b, data, 0)
		if err != nil {
			t.Fatal(err)
		}
		return appendResultTail(b, start, str("message"), str("detail"))
	case "error":
		data, ok := get(m, "data")
		if !ok {
			return appendError(nil, num("id", 0), str("message"), str("detail"))
		}
		b, err := appendErrorData(nil, num("id", 0), str("message"), str("detail"), data)
		if err != nil {
			t.Fatal(err)
		}
		return b
	case "log":
		_, hasID := get(m, "id")
		return appendLog(nil, str("level"), str("msg"), num("id", 0), hasID, str("time"))
	}
	t.Fatalf("no encoder for %v", typ)
	return nil
}

func TestVectorsEncode(t *testing.T) {
	v := loadVectors(t)
	canonical := 0
	for _, vec := range v.Valid {
		if vec.Direction != "to_bridge" {
			continue
		}
		t.Run(vec.Name, func(t *testing.T) {
			want, err := parseOrdered(vec.Value)
			if err != nil {
				t.Fatal(err)
			}
			got := encodeVector(t, want.(Map))
			if vec.Canonical {
				canonical++
				if g := hex.EncodeToString(got); g != vec.Hex {
					t.Errorf("encoding differs\n got %s\nwant %s", g, vec.Hex)
				}
				return
			}
			// Not canonical (fields left out): the adapter writes every field, and
			// what it writes must mean the same.
			_, gm := readOne(t, got)
			_, wm := readOne(t, unhex(t, vec.Hex))
			if !reflect.DeepEqual(typedView(gm), typedView(wm)) {
				t.Errorf("encoding means something else\n got %#v\nwant %#v", typedView(gm), typedView(wm))
			}
		})
	}
	if canonical == 0 {
		t.Error("no canonical to_bridge vectors")
	}
}

func TestVectorsInvalid(t *testing.T) {
	v := loadVectors(t)
	for _, vec := range v.Invalid {
		t.Run(vec.Name, func(t *testing.T) {
			limit := v.DefaultMaxFrame
			if vec.MaxFrame != 0 {
				limit = vec.MaxFrame
			}
			br := bufio.NewReader(bytes.NewReader(unhex(t, vec.Hex)))
			var err error
			for err == nil {
				var body []byte
				if body, err = readFrame(br, limit); err == nil {
					var m message
					err = decodeMessage(body, &m)
				}
			}
			var pe *ProtocolError
			if !errors.As(err, &pe) {
				t.Fatalf("got %v, want a %s protocol error", err, vec.Error)
			}
			if string(pe.Kind) != vec.Error {
				t.Errorf("got kind %s (%v), want %s", pe.Kind, pe, vec.Error)
			}
		})
	}
}

// TestVectorsSequences replays every sequence on a bridge conn and a child conn at
// once: the sender must agree to send each frame (or refuse it with the step's kind,
// changing nothing), the receiver must take it (or reject it with that kind). The
// serve loop holds a child conn; TestChildRejectsSequenceErrors checks it over pipes.
func TestVectorsSequences(t *testing.T) {
	v := loadVectors(t)
	if len(v.Sequences) == 0 {
		t.Fatal("no sequences")
	}
	kinds := map[string]bool{}
	for _, seq := range v.Sequences {
		t.Run(seq.Name, func(t *testing.T) {
			conns := map[string]*conn{"bridge": newConn(roleBridge), "child": newConn(roleChild)}
			for i, step := range seq.Steps {
				body, err := readFrame(bufio.NewReader(bytes.NewReader(unhex(t, step.Hex))), DefaultMaxFrame)
				if err != nil {
					t.Fatal(err)
				}
				var m message
				if err := decodeMessage(body, &m); err != nil {
					t.Fatal(err)
				}
				sender, receiver := conns[step.From], conns["child"]
				if step.From == "child" {
					receiver = conns["bridge"]
				}
				before := sender.state
				sendErr := sender.send(m.spec, m.id, m.protocol, m.protocols)
				recvErr := receiver.receive(&m)
				if step.Error == "" {
					if sendErr != nil || recvErr != nil || m.typ != step.Event {
						t.Fatalf("step %d (%s from the %s): send %v, receive %v", i, m.typ, step.From, sendErr, recvErr)
					}
					continue
				}
				kinds[step.Error] = true
				for side, err := range map[string]error{"sender": sendErr, "receiver": recvErr} {
					var pe *ProtocolError
					if !errors.As(err, &pe) || string(pe.Kind) != step.Error {
						t.Errorf("step %d (%s from the %s): the %s got %v, want kind %s", i, m.typ, step.From, side, err, step.Error)
					}
				}
				if sender.state != before {
					t.Errorf("a refused send moved the state from %s to %s", stateNames[before], stateNames[sender.state])
				}
			}
		})
	}
	for _, k := range []ErrorKind{KindUnexpected, KindUnknownID, KindDuplicateID} {
		if !kinds[string(k)] {
			t.Errorf("no sequence ends in %s", k)
		}
	}
}

// TestErrorKindsAreTheVectors checks that ErrorKind and the vectors name the same kinds.
func TestErrorKindsAreTheVectors(t *testing.T) {
	v := loadVectors(t)
	used := map[string]bool{}
	for _, vec := range v.Invalid {
		used[vec.Error] = true
	}
	for _, seq := range v.Sequences {
		if last := seq.Steps[len(seq.Steps)-1]; last.Error != "" {
			used[last.Error] = true
		}
	}
	if len(used) != len(errorKinds) {
		t.Errorf("the vectors use %d kinds, ErrorKind has %d", len(used), len(errorKinds))
	}
	for _, k := range errorKinds {
		if !used[string(k)] {
			t.Errorf("no vector for %s", k)
		}
	}
}

// The json vectors are the bridge's business, but their msgpack must decode here.
func TestVectorsJSONMsgpackDecodes(t *testing.T) {
	v := loadVectors(t)
	for _, vec := range v.JSON {
		b := unhex(t, vec.MsgpackHex)
		d := decoder{b: b}
		if err := d.skip(0); err != nil || d.off != len(b) {
			t.Errorf("%s: skip: %v (%d of %d bytes)", vec.Name, err, d.off, len(b))
		}
		d = decoder{b: b}
		if _, err := d.value(0); err != nil {
			t.Errorf("%s: value: %v", vec.Name, err)
		}
	}
}

// Shortest forms at every boundary, checked against the decoder.
func TestMsgpackIntegers(t *testing.T) {
	cases := []struct {
		v    int64
		want string
	}{
		{0, "00"}, {127, "7f"}, {128, "cc80"}, {255, "ccff"}, {256, "cd0100"}, {65535, "cdffff"},
		{65536, "ce00010000"}, {math.MaxUint32, "ceffffffff"}, {math.MaxUint32 + 1, "cf0000000100000000"},
		{-1, "ff"}, {-32, "e0"}, {-33, "d0df"}, {-128, "d080"}, {-129, "d1ff7f"}, {-32768, "d18000"},
		{-32769, "d2ffff7fff"}, {math.MinInt32, "d280000000"}, {math.MinInt32 - 1, "d3ffffffff7fffffff"},
	}
	for _, c := range cases {
		got := hex.EncodeToString(appendInt(nil, c.v))
		if got != c.want {
			t.Errorf("%d: got %s want %s", c.v, got, c.want)
		}
		d := decoder{b: appendInt(nil, c.v)}
		v, err := d.value(0)
		if err != nil || v != c.v {
			t.Errorf("%d: decoded %v %v", c.v, v, err)
		}
	}
	for _, n := range []int{0, 31, 32, 255, 256, 65535, 65536} {
		s := string(bytes.Repeat([]byte("x"), n))
		b := appendStr(nil, s)
		d := decoder{b: b}
		if got, err := d.str(); err != nil || got != s || d.off != len(b) {
			t.Errorf("str %d: %v", n, err)
		}
		b = appendBin(nil, []byte(s))
		d = decoder{b: b}
		if got, err := d.bin(); err != nil || string(got) != s || d.off != len(b) {
			t.Errorf("bin %d: %v", n, err)
		}
	}
	for _, n := range []int{0, 15, 16, 65535, 65536} {
		arr := make([]any, n)
		var enc encoder
		b, _ := enc.appendValue(nil, arr, 0)
		d := decoder{b: b}
		if v, err := d.value(0); err != nil || len(v.([]any)) != n {
			t.Errorf("array %d: %v", n, err)
		}
		m := make(map[string]any, n)
		for i := 0; i < n; i++ {
			m[fmt.Sprint(i)] = i
		}
		b, _ = enc.appendValue(nil, m, 0)
		d = decoder{b: b}
		if v, err := d.value(0); err != nil || len(v.(map[string]any)) != n {
			t.Errorf("map %d: %v", n, err)
		}
	}
}
