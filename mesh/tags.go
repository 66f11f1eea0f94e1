package mesh

import (
	"fmt"
	"maps"
	"slices"
	"unicode/utf8"
)

// Node tags: a few key=value pairs a node announces about itself (role,
// version, a service port), carried in its hello and so covered by the
// handshake MAC: a peer's tags are as authenticated as its name. They are
// fixed for the life of a Mesh.
//
// On the wire (since wire version 2 the hello may carry extensions after
// the features; older version-2 nodes ignore them): extensions are
// type (1 byte), length (2 bytes, big-endian), value. Extension extTags is
// a count (1 byte) then, sorted by key, key length (1), key, value length
// (1), value. Unknown extension types are skipped.
const (
	// MaxTags bounds the number of tags of a node.
	MaxTags = 32
	// MaxTagBytes bounds the total length of a node's keys and values.
	MaxTagBytes = 256
	// MaxTagKey bounds one key's length.
	MaxTagKey = 64

	extTags byte = 0x01
)

// ValidateTags checks tags against the bounds: at most MaxTags, keys of 1
// to MaxTagKey bytes of [A-Za-z0-9_.-/], values valid UTF-8 without
// control characters, at most MaxTagBytes of keys and values in all.
func ValidateTags(tags map[string]string) error {
	if len(tags) > MaxTags {
		return fmt.Errorf("%d tags, at most %d", len(tags), MaxTags)
	}
	total := 0
	for k, v := range tags {
		if k == "" || len(k) > MaxTagKey {
			return fmt.Errorf("tag key %q: want 1 to %d bytes", k, MaxTagKey)
		}
		for _, r := range k {
			if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '_' || r == '.' || r == '-' || r == '/') {
				return fmt.Errorf("tag key %q: only letters, digits and _ . - /", k)
			}
		}
		if !utf8.ValidString(v) {
			return fmt.Errorf("tag %s: value is not UTF-8", k)
		}
		for _, r := range v {
			if r < 0x20 || r == 0x7f {
				return fmt.Errorf("tag %s: control character in the value", k)
			}
		}
		total += len(k) + len(v)
	}
	if total > MaxTagBytes {
		return fmt.Errorf("tags of %d bytes, at most %d", total, MaxTagBytes)
	}
	return nil
}

// encodeTags is the value of the extTags extension for tags ("" for none).
func encodeTags(tags map[string]string) string {
	if len(tags) == 0 {
		return ""
	}
	var v []byte
	v = append(v, byte(len(tags)))
	for _, k := range slices.Sorted(maps.Keys(tags)) {
		v = append(v, byte(len(k)))
		v = append(v, k...)
		v = append(v, byte(len(tags[k])))
		v = append(v, tags[k]...)
	}
	return string(v)
}

// decodeTags is the map of a value parseExtensions accepted (nil for "").
func decodeTags(v string) map[string]string {
	if v == "" {
		return nil
	}
	tags, _ := parseTags([]byte(v))
	return tags
}

// appendExtensions appends the hello's extensions (today: its tags).
func appendExtensions(dst []byte, h *hello) []byte {
	if h.Tags == "" {
		return dst
	}
	dst = append(dst, extTags, byte(len(h.Tags)>>8), byte(len(h.Tags)))
	return append(dst, h.Tags...)
}

// parseExtensions reads the extensions after a hello's features into h.
// The area was "ignored" before it had a format (wire version 2 as first
// released), and later versions may put anything there: bytes that do not
// parse as extensions, unknown types and invalid tags are ignored, never
// an error.
func parseExtensions(b []byte, h *hello) {
	for len(b) >= 3 {
		typ, n := b[0], int(b[1])<<8|int(b[2])
		if len(b) < 3+n {
			return
		}
		v := b[3 : 3+n]
		b = b[3+n:]
		if typ == extTags {
			// Only the canonical form (sorted keys, no duplicate, at
			// least one tag): one set of tags has one encoding.
			if tags, err := parseTags(v); err == nil && encodeTags(tags) == string(v) {
				h.Tags = string(v)
			}
		}
	}
}

func parseTags(v []byte) (map[string]string, error) {
	if len(v) < 1 {
		return nil, fmt.Errorf("empty tags")
	}
	count := int(v[0])
	v = v[1:]
	if count > MaxTags {
		return nil, fmt.Errorf("%d tags, at most %d", count, MaxTags)
	}
	tags := make(map[string]string, count)
	field := func() (string, bool) {
		if len(v) < 1 || len(v) < 1+int(v[0]) {
			return "", false
		}
		s := string(v[1 : 1+int(v[0])])
		v = v[1+int(v[0]):]
		return s, true
	}
	for range count {
		k, ok1 := field()
		val, ok2 := field()
		if !ok1 || !ok2 {
			return nil, fmt.Errorf("truncated tags")
		}
		tags[k] = val
	}
	if len(v) != 0 {
		return nil, fmt.Errorf("%d bytes after the tags", len(v))
	}
	if err := ValidateTags(tags); err != nil {
		return nil, err
	}
	return tags, nil
}
