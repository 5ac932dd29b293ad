package flowbridge

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strings"
	"testing"
	"time"
)

func encodeHex(t *testing.T, v any) string {
	t.Helper()
	var e encoder
	b, err := e.appendValue(nil, v, 0)
	if err != nil {
		t.Fatalf("encode %#v: %v", v, err)
	}
	return hex.EncodeToString(b)
}

type inner struct {
	B int `json:"b"`
}

type outer struct {
	inner
	A       string  `json:"a"`
	Skip    int     `json:"-"`
	Zero    string  `json:"zero,omitempty"`
	Ptr     *inner  `json:"ptr"`
	private int     //nolint:unused
	Tagged  float64 `msgpack:"t" json:"ignored"`
}

type textKey int

func (k textKey) MarshalText() ([]byte, error) { return []byte("k" + string(rune('0'+k))), nil }

func TestEncodeValues(t *testing.T) {
	cases := []struct {
		v    any
		want string
	}{
		{nil, "c0"},
		{true, "c3"},
		{int8(-5), "fb"},
		{uint16(300), "cd012c"},
		{1.5, "cb3ff8000000000000"},
		{float32(1.5), "ca3fc00000"},
		{"中", "a3e4b8ad"},
		{"a\xffb", "a561efbfbd62"}, // invalid UTF-8 becomes U+FFFD: a str must be UTF-8
		{[]byte{0, 1}, "c4020001"},
		{json.Number("12"), "0c"},
		{json.Number("-1.5"), "cbbff8000000000000"},
		{json.Number("18446744073709551615"), "cfffffffffffffffff"},
		{json.RawMessage(`{"x":[1,true]}`), "81a1789201c3"},
		{map[string]any{"b": 1, "a": 2}, "82a16102a16201"}, // sorted keys
		{Map{{"b", 1}, {"a", 2}}, "82a16201a16102"},        // in order
		{map[string]int{"b": 1, "a": 2}, "82a16102a16201"},
		{map[int]string{2: "x", 10: "y"}, "820aa17902a178"}, // int keys stay ints, sorted as text
		{map[textKey]int{1: 1}, "81a26b3101"},
		{[]int{1, 2}, "920102"},
		{[2]string{"a", "b"}, "92a161a162"},
		{&inner{B: 1}, "81a16201"},
		{(*inner)(nil), "c0"},
		{outer{inner: inner{B: 1}, A: "x", Skip: 9, Tagged: 2}, "84a16201a161a178a3707472c0a174cb4000000000000000"},
		{time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC), "b4323032362d30312d30325430333a30343a30355a"},
		{errors.New("e"), "a165"},
	}
	for _, c := range cases {
		if got := encodeHex(t, c.v); got != c.want {
			t.Errorf("%#v:\n got %s\nwant %s", c.v, got, c.want)
		}
	}
}

func TestEncodeErrors(t *testing.T) {
	cyclic := map[string]any{}
	cyclic["self"] = cyclic
	cases := []struct {
		v    any
		path string
	}{
		{map[string]any{"a": []any{1, make(chan int)}}, "$.a[1]"},
		{Map{{"x", map[float64]int{1.5: 1}}}, "$.x"},
		{cyclic, "$.self.self.self"},
		{json.RawMessage(`{`), "$"},
	}
	for _, c := range cases {
		var e encoder
		_, err := e.appendValue(nil, c.v, 0)
		var ee *EncodeError
		if !errors.As(err, &ee) || !strings.HasPrefix(ee.Path, c.path) {
			t.Errorf("%T: got %v, want an error at %s", c.v, err, c.path)
		}
	}
}

func TestAppendResult(t *testing.T) {
	s := &server{maxFrame: DefaultMaxFrame}
	check := func(v any, wantOK bool, want string) {
		t.Helper()
		b, ok := s.appendResult(nil, 1, v)
		if ok != wantOK {
			t.Fatalf("%#v: ok=%v (%s)", v, ok, b)
		}
		if !ok {
			if !strings.Contains(string(b), want) {
				t.Errorf("%#v: %s", v, b)
			}
			return
		}
		_, m := readOne(t, b)
		if got := hex.EncodeToString(appendDataOf(t, m)); got != want {
			t.Errorf("%#v: data %s, want %s", v, got, want)
		}
	}
	check(nil, true, "80")
	check(map[string]any(nil), true, "80")
	check((*inner)(nil), true, "80")
	check(Reply{Data: Map{{"a", 1}}, Message: "m"}, true, "81a16101")
	check(&Reply{}, true, "80")
	check(inner{B: 2}, true, "81a16202")
	// Any value is result data; nil-ish values mean {}, Null and JSON null mean null.
	check("text", true, "a474657874")
	check([]int{1}, true, "9101")
	check([]int(nil), true, "80")
	check(42, true, "2a")
	check(Null, true, "c0")
	check(Reply{Data: Null}, true, "c0")
	check(json.RawMessage("null"), true, "c0")
	check(json.RawMessage(`[1]`), true, "9101")
	check(map[string]any{"c": make(chan int)}, false, "$.c")
	check(map[string]any{"nan": math.NaN()}, true, "81a36e616ecb7ff8000000000001") // the bridge refuses it, by path
	s.maxFrame = 1024
	check(map[string]any{"s": strings.Repeat("x", 2000)}, false,
		"result too large: 2045 bytes, the limit is 1024 (hello.max_frame); return less data")
}

func appendDataOf(t *testing.T, m *message) []byte {
	var e encoder
	b, err := e.appendValue(nil, m.data, 0)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestErrorText(t *testing.T) {
	cases := []struct {
		err             error
		reason          string
		message, detail string
	}{
		{errors.New("plain"), "", "plain", ""},
		{&HandlerError{Message: "m", Detail: "d"}, "", "m", "d"},
		{Errorf("wrapped: %w", &HandlerError{Message: "inner"}), "", "wrapped: inner", ""},
		{context_Canceled(), "timeout", "cancelled", "cancelled by the bridge: timeout"},
		{context_Canceled(), "", "op: context canceled", ""},
		{fmtErrorf("reading: %w", &HandlerError{Message: "bad", Detail: "d"}), "", "reading: bad", "d"},
		{(*HandlerError)(nil), "", "*flowbridge.HandlerError (its Error method panicked: runtime error: invalid memory address or nil pointer dereference)", ""},
	}
	for _, c := range cases {
		m, d := errorText(c.err, c.reason)
		if m != c.message || d != c.detail {
			t.Errorf("%v: got %q %q, want %q %q", c.err, m, d, c.message, c.detail)
		}
	}
}

func context_Canceled() error { return fmtErrorf("op: %w", contextCanceled) }

var (
	contextCanceled = context.Canceled
	fmtErrorf       = fmt.Errorf
)
