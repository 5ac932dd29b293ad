package flowbridge

import (
	"bytes"
	"encoding/json"
	"reflect"
	"testing"
	"unicode/utf8"
)

// stdJSON parses as encoding/json does with UseNumber, for comparison.
func stdJSON(raw []byte) (any, bool) {
	if !utf8.Valid(raw) || !json.Valid(raw) {
		return nil, false
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, false
	}
	return v, true
}

var jsonSeeds = []string{
	`{}`, `[]`, `{"a":1,"b":[true,false,null,-0.5e+3,"x"]}`, ` {"i" : 1 , "payload":"温度传感器"} `,
	`"\u00e9\ud83d\ude00\ud800x\udc00\"\\\/\b\f\n\r\t"`, `"\ud800\u0041"`, `"\ud800\uzzzz"`,
	`01`, `-`, `1.`, `1e`, `.5`, `+1`, `[1,]`, `{"a":1,}`, `{"a" 1}`, `{a:1}`, "\"\x01\"", `"\x"`,
	`nul`, `truex`, `[1 2]`, `{"a":1}{}`, `{"a":1} x`, "\ufeff{}", `1E400`, `-0`, `{"a":1,"a":2}`,
	"", " ", `"`, `"\u12"`, `[[[[]]]]`, `123456789012345678901234567890`,
}

func TestParseJSONMatchesEncodingJSON(t *testing.T) {
	for _, s := range jsonSeeds {
		got, err := parseJSON([]byte(s))
		want, ok := stdJSON([]byte(s))
		if (err == nil) != ok || !reflect.DeepEqual(got, want) {
			t.Errorf("%q: got %#v, %v; encoding/json %#v, %v", s, got, err, want, ok)
		}
	}
}

func FuzzParseJSON(f *testing.F) {
	for _, s := range jsonSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		got, err := parseJSON(raw)
		want, ok := stdJSON(raw)
		if (err == nil) != ok || !reflect.DeepEqual(got, want) {
			t.Fatalf("%q: got %#v, %v; encoding/json %#v, %v", raw, got, err, want, ok)
		}
	})
}

func BenchmarkParseJSON(b *testing.B) {
	raw := []byte(`{"i":1,"payload":"温度传感器","sleep_ms":0,"echo":{"a":[1,2.5,"x"]}}`)
	b.Run("flowbridge", func(b *testing.B) {
		for range b.N {
			parseJSON(raw)
		}
	})
	b.Run("encoding/json", func(b *testing.B) {
		for range b.N {
			stdJSON(raw)
		}
	})
}
