package jsonstr

import (
	"bytes"
	"encoding/json"
	"testing"
)

// TestAppendIsEncodingJSON: every byte and the runes that matter are
// written as json.Marshal writes them.
func TestAppendIsEncodingJSON(t *testing.T) {
	var in []string
	for c := range 256 {
		in = append(in, string([]byte{byte(c)}), "a"+string([]byte{byte(c)})+"b")
	}
	for _, r := range []rune{0x80, 0x7ff, 0x800, 0x2027, 0x2028, 0x2029, 0x202a, 0xfffd, 0xffff, 0x10000, 0x10ffff} {
		in = append(in, string(r), "x"+string(r)+"<")
	}
	in = append(in, "", "\xed\xa0\x80", "\xe2\x80\xa8\xe2\x80\xa9", "\xe2\x80", "\xf0\x9f\x98")
	for _, s := range in {
		want, _ := json.Marshal(s)
		if got := Append(nil, s); !bytes.Equal(got, want) {
			t.Errorf("Append(%q) = %s, json.Marshal: %s", s, got, want)
		}
	}
}
