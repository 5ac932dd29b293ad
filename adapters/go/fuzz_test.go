package flowbridge

import (
	"encoding/hex"
	"encoding/json"
	"os"
	"testing"
)

// FuzzDecodeMessage checks that no frame body makes the decoder panic, and that
// whatever it accepts survives a generic decode too.
func FuzzDecodeMessage(f *testing.F) {
	raw, err := os.ReadFile("../../protocol/vectors.json")
	if err == nil {
		var v struct {
			Valid   []struct{ Hex string } `json:"valid"`
			Invalid []struct{ Hex string } `json:"invalid"`
		}
		if json.Unmarshal(raw, &v) == nil {
			for _, x := range append(v.Valid, v.Invalid...) {
				if b, err := hex.DecodeString(x.Hex); err == nil && len(b) >= 4 {
					f.Add(b[4:])
				}
			}
		}
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		var m message
		if err := decodeMessage(body, &m); err != nil {
			if _, ok := err.(*ProtocolError); !ok {
				t.Fatalf("error of type %T", err)
			}
			return
		}
		d := decoder{b: body}
		if _, err := d.value(0); err != nil {
			t.Fatalf("accepted frame fails a generic decode: %v", err)
		}
	})
}
