package ratelimit

import (
	"fmt"
	"strconv"
)

// The response headers of draft-ietf-httpapi-ratelimit-headers-09 are
// Structured Fields (RFC 8941, RFC 9651): Lists of Items, each a String
// (the policy name) with integer parameters.
//
//	RateLimit-Policy: "tokens-shopper";q=10;w=5, "tokens-ip";q=200;w=2
//	RateLimit: "tokens-shopper";r=9;t=1, "tokens-ip";r=199;t=1
//
// q is the quota (the effective capacity), w the window in seconds, r the
// tokens remaining and t the seconds until the bucket is full. Shadow
// results are written like the others; leave them out of rs to hide them.

// maxInteger is the largest sf-integer (15 digits); larger figures are
// written as this.
const maxInteger = 999_999_999_999_999

// PolicyHeader is the RateLimit-Policy field value for rs, "" for none.
func PolicyHeader(rs []Result) string {
	if len(rs) == 0 {
		return ""
	}
	return string(AppendPolicyHeader(make([]byte, 0, 40*len(rs)), rs))
}

// RateLimitHeader is the RateLimit field value for rs, "" for none.
func RateLimitHeader(rs []Result) string {
	if len(rs) == 0 {
		return ""
	}
	return string(AppendRateLimitHeader(make([]byte, 0, 40*len(rs)), rs))
}

// AppendPolicyHeader appends the RateLimit-Policy field value for rs to dst:
// for each result its policy name with q= its quota and w= its window in
// whole seconds, rounded up and at least 1.
func AppendPolicyHeader(dst []byte, rs []Result) []byte {
	for i, r := range rs {
		if i > 0 {
			dst = append(dst, ", "...)
		}
		dst = appendString(dst, r.Policy)
		dst = appendParam(dst, "q", int64(r.Quota))
		dst = appendParam(dst, "w", max(ceilSeconds(r.Window), 1))
	}
	return dst
}

// AppendRateLimitHeader appends the RateLimit field value for rs to dst:
// for each result its policy name with r= the whole tokens remaining and
// t= the seconds until the bucket is full, rounded up.
func AppendRateLimitHeader(dst []byte, rs []Result) []byte {
	for i, r := range rs {
		if i > 0 {
			dst = append(dst, ", "...)
		}
		dst = appendString(dst, r.Policy)
		dst = appendParam(dst, "r", int64(r.Remaining))
		dst = appendParam(dst, "t", ceilSeconds(r.Reset))
	}
	return dst
}

// appendString appends s as an sf-string. Bytes an sf-string cannot hold
// (controls, non-ASCII) become '?'; policy names never have them.
func appendString(dst []byte, s string) []byte {
	dst = append(dst, '"')
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == '"' || c == '\\':
			dst = append(dst, '\\', c)
		case c < 0x20 || c > 0x7e:
			dst = append(dst, '?')
		default:
			dst = append(dst, c)
		}
	}
	return append(dst, '"')
}

// appendParam appends ;key=v, v clamped to 0 to maxInteger.
func appendParam(dst []byte, key string, v int64) []byte {
	dst = append(dst, ';')
	dst = append(dst, key...)
	dst = append(dst, '=')
	return strconv.AppendInt(dst, min(max(v, 0), maxInteger), 10)
}

// Item is one member of a parsed RateLimit or RateLimit-Policy list: the
// policy name and its parameters.
type Item struct {
	Name   string
	Params map[string]int64
}

// ParseList parses a RateLimit or RateLimit-Policy field value strictly by
// RFC 8941 for the subset those fields use: a List of Items, each an
// sf-string with integer parameters (sf-keys, up to 15 digits, an optional
// minus sign). Leading and trailing spaces are dropped, OWS is allowed
// around the commas, and of two parameters with one key the last wins. An
// empty value is an empty list. Anything else, including other bare item
// types, inner lists and a trailing comma, is an error that names the
// problem and its byte offset.
func ParseList(s string) ([]Item, error) {
	p := parser{s: s}
	for p.i < len(p.s) && p.s[p.i] == ' ' {
		p.i++
	}
	end := len(p.s)
	for end > p.i && p.s[end-1] == ' ' {
		end--
	}
	p.s = p.s[:end]
	var items []Item
	for p.i < len(p.s) {
		it, err := p.item()
		if err != nil {
			return nil, err
		}
		items = append(items, it)
		p.ows()
		if p.i == len(p.s) {
			break
		}
		if p.s[p.i] != ',' {
			return nil, p.errorf("expected ',' or the end after a list member, got %q", p.s[p.i])
		}
		p.i++
		p.ows()
		if p.i == len(p.s) {
			return nil, p.errorf("trailing comma")
		}
	}
	return items, nil
}

// parser is the state of ParseList: the input and the offset reached.
type parser struct {
	s string
	i int
}

// ParseError is the error of ParseList: what is wrong, and where.
type ParseError struct {
	Offset int    // byte offset in the input
	Msg    string // what is wrong
}

// Error implements error.
func (e *ParseError) Error() string {
	return fmt.Sprintf("ratelimit: structured field at byte %d: %s", e.Offset, e.Msg)
}

// errorf is a ParseError at the current offset.
func (p *parser) errorf(format string, args ...any) error {
	return &ParseError{Offset: p.i, Msg: fmt.Sprintf(format, args...)}
}

// ows skips optional white space: SP and HTAB.
func (p *parser) ows() {
	for p.i < len(p.s) && (p.s[p.i] == ' ' || p.s[p.i] == '\t') {
		p.i++
	}
}

// item parses an sf-string and its parameters.
func (p *parser) item() (Item, error) {
	switch c := p.s[p.i]; c {
	case '"':
	case '(':
		return Item{}, p.errorf("inner lists are not allowed here")
	default:
		return Item{}, p.errorf("list member must be a string, got %q", c)
	}
	name, err := p.str()
	if err != nil {
		return Item{}, err
	}
	it := Item{Name: name}
	for p.i < len(p.s) && p.s[p.i] == ';' {
		p.i++
		for p.i < len(p.s) && p.s[p.i] == ' ' {
			p.i++
		}
		key, err := p.key()
		if err != nil {
			return Item{}, err
		}
		if p.i == len(p.s) || p.s[p.i] != '=' {
			return Item{}, p.errorf("parameter %q must have an integer value", key)
		}
		p.i++
		v, err := p.integer(key)
		if err != nil {
			return Item{}, err
		}
		if it.Params == nil {
			it.Params = make(map[string]int64, 2)
		}
		it.Params[key] = v // a duplicate key: the last wins
	}
	return it, nil
}

// str parses an sf-string; p.s[p.i] is its opening quote.
func (p *parser) str() (string, error) {
	start := p.i
	p.i++
	var b []byte // only when there is an escape
	from := p.i
	for p.i < len(p.s) {
		c := p.s[p.i]
		switch {
		case c == '"':
			p.i++
			if b == nil {
				return p.s[from : p.i-1], nil
			}
			return string(b), nil
		case c == '\\':
			if p.i+1 == len(p.s) {
				p.i++
				return "", p.errorf("string ends in a backslash")
			}
			if e := p.s[p.i+1]; e != '"' && e != '\\' {
				p.i++
				return "", p.errorf("backslash must escape '\"' or '\\\\', got %q", e)
			}
			if b == nil {
				b = append(make([]byte, 0, len(p.s)-from), p.s[from:p.i]...)
			}
			b = append(b, p.s[p.i+1])
			p.i += 2
		case c < 0x20 || c > 0x7e:
			return "", p.errorf("string holds a byte outside printable ASCII: %q", c)
		default:
			if b != nil {
				b = append(b, c)
			}
			p.i++
		}
	}
	p.i = start
	return "", p.errorf("string has no closing quote")
}

// key parses an sf-key: lcalpha or "*", then lcalpha, DIGIT, "_", "-",
// "." or "*".
func (p *parser) key() (string, error) {
	start := p.i
	if p.i == len(p.s) {
		return "", p.errorf("parameter key missing at the end")
	}
	if c := p.s[p.i]; !('a' <= c && c <= 'z' || c == '*') {
		return "", p.errorf("parameter key must start with a-z or '*', got %q", c)
	}
	p.i++
	for p.i < len(p.s) {
		c := p.s[p.i]
		if !('a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '_' || c == '-' || c == '.' || c == '*') {
			break
		}
		p.i++
	}
	return p.s[start:p.i], nil
}

// integer parses an sf-integer, the value of parameter key.
func (p *parser) integer(key string) (int64, error) {
	start := p.i
	neg := false
	if p.i < len(p.s) && p.s[p.i] == '-' {
		neg = true
		p.i++
	}
	digits := p.i
	var v int64
	for p.i < len(p.s) && '0' <= p.s[p.i] && p.s[p.i] <= '9' {
		if p.i-digits == 15 {
			p.i = start
			return 0, p.errorf("parameter %q: integer has more than 15 digits", key)
		}
		v = v*10 + int64(p.s[p.i]-'0')
		p.i++
	}
	if p.i == digits {
		p.i = start
		return 0, p.errorf("parameter %q must have an integer value", key)
	}
	if p.i < len(p.s) && p.s[p.i] == '.' {
		p.i = start
		return 0, p.errorf("parameter %q must be an integer, not a decimal", key)
	}
	if neg {
		v = -v
	}
	return v, nil
}
