package events

import (
	"bytes"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"
)

// The fast codec (codec_encode.go, codec_decode.go) must be
// indistinguishable from the reference one (encoding/json, codec.go). These
// tests compare the two on random and mutated input.

// gen makes random events. In clean mode everything it makes is valid and
// in the canonical form, so both fast paths must take all of it; otherwise
// it also makes what needs escaping, odd times, wrong payloads and invalid
// ids.
type gen struct {
	r     *rand.Rand
	clean bool
}

func newGen(seed uint64, clean bool) *gen {
	return &gen{r: rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)), clean: clean}
}

func (g *gen) chance(p float64) bool { return g.r.Float64() < p }

var (
	cleanPieces = []string{"a", "Z", "0", "-", "_", ".", "/", ":", " ", "~", "é", "日本", "😀", "\uFFFD", "\x7f", "'", "+", "="}
	dirtyPieces = []string{"<", ">", "&", `"`, `\`, "\x00", "\x01", "\b", "\f", "\n", "\r", "\t", "\x1f",
		"\u2028", "\u2029", "\xff", "\xc3", "\xed\xa0\x80", "\xe2\x80", "\xe2\x80\xa8x", "\xf4\x90\x80\x80", "</script>", "\\u0041"}
)

func (g *gen) str() string {
	n := g.r.IntN(12)
	var sb strings.Builder
	for range n {
		if !g.clean && g.chance(0.3) {
			sb.WriteString(dirtyPieces[g.r.IntN(len(dirtyPieces))])
		} else {
			sb.WriteString(cleanPieces[g.r.IntN(len(cleanPieces))])
		}
	}
	return sb.String()
}

// optStr is a string that is empty half the time.
func (g *gen) optStr() string {
	if g.chance(0.5) {
		return ""
	}
	return g.str()
}

func (g *gen) id() string {
	if !g.clean && g.chance(0.05) {
		return g.str()
	}
	return DerivedID(g.time(), fmt.Sprint(g.r.Uint64()))
}

func (g *gen) sale() string {
	if !g.clean && g.chance(0.05) {
		return g.str()
	}
	return []string{"demo", "s", "sale-2026_01", "0x", strings.Repeat("a", 64)}[g.r.IntN(5)]
}

// time is mostly a plausible time in UTC; in dirty mode also the zero time,
// edge years, odd zones and times MarshalJSON refuses.
func (g *gen) time() time.Time {
	base := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC).Add(time.Duration(g.r.Int64N(int64(48 * time.Hour))))
	switch g.r.IntN(4) {
	case 0:
		base = base.Truncate(time.Second)
	case 1:
		base = base.Truncate(time.Millisecond)
	case 2:
		base = base.Add(time.Duration(g.r.IntN(1000))) // trailing nanoseconds
	}
	if g.clean || g.chance(0.6) {
		return base
	}
	zones := []*time.Location{time.UTC, time.Local, time.FixedZone("", 0), time.FixedZone("X", 3600),
		time.FixedZone("", -(9*3600 + 30*60)), time.FixedZone("", 14*3600), time.FixedZone("", 23*3600+59*60),
		time.FixedZone("", 24*3600), time.FixedZone("", -25*3600), time.FixedZone("", 3600+17), time.FixedZone("", -1)}
	switch g.r.IntN(8) {
	case 0:
		return time.Time{}
	case 1:
		years := []int{-1, 0, 1, 999, 1969, 1970, 2000, 2200, 9999, 10000, -10000, 292277026596}
		return time.Date(years[g.r.IntN(len(years))], time.Month(1+g.r.IntN(12)), 1+g.r.IntN(28), g.r.IntN(24), g.r.IntN(60), g.r.IntN(60), g.r.IntN(1e9), zones[g.r.IntN(len(zones))])
	case 2:
		return time.Now() // with a monotonic reading
	case 3:
		return time.Date(9999, 12, 31, 23, 59, 59, 999999999, time.UTC).In(zones[g.r.IntN(len(zones))])
	case 4:
		return time.Date(0, 1, 1, 0, 0, 0, 0, time.UTC).In(zones[g.r.IntN(len(zones))])
	case 5:
		return time.Unix(g.r.Int64()>>g.r.IntN(64), g.r.Int64N(2e9)-5e8)
	}
	return base.In(zones[g.r.IntN(len(zones))])
}

func (g *gen) int() int64 {
	switch g.r.IntN(6) {
	case 0:
		return 0
	case 1:
		return math.MaxInt64
	case 2:
		return math.MinInt64
	case 3:
		return -g.r.Int64N(1000)
	}
	return g.r.Int64N(1e6)
}

func (g *gen) tickets() []string {
	if !g.clean && g.chance(0.2) {
		return nil
	}
	ts := make([]string, g.r.IntN(4))
	for i := range ts {
		ts[i] = g.id()
	}
	return ts
}

func (g *gen) reason() string {
	if g.chance(0.3) {
		return g.str()
	}
	rs := []string{ReasonNotOpen, ReasonClosed, ReasonSoldOut, ReasonQuotaExhausted, ReasonLimitReached, ReasonTokenUnknown,
		ReasonTokenExpired, ReasonTokenUsed, ReasonTokenNotYours, LeftByShopper, LeftIdle, LeftUnclaimed, LeftNothing}
	return rs[g.r.IntN(len(rs))]
}

var (
	requestTypes  = []Type{TypeTokenRequested, TypePurchaseRequested, TypeSaleUpdateRequested, TypeQueueJoinRequested, TypeQueueLeaveRequested, TypeQueueSeenRequested, TypeQueueClaimRequested}
	decisionTypes = []Type{TypeTokenIssued, TypeTokenDenied, TypeTokenExpired, TypePurchaseAccepted, TypePurchaseRefused, TypeSaleUpdated,
		TypeQueueJoined, TypeQueueJoinDenied, TypeQueueShuffled, TypeQueueAdmitted, TypeQueueClaimed, TypeQueueSeen, TypeQueueLeft, TypeQueueClosed}
)

// data makes a payload of type t.
func (g *gen) data(t Type) any {
	switch t {
	case TypeSaleCreated:
		return &SaleCreated{Stock: g.int(), QuotaBuffer: g.r.Float64() * 3, Quota: g.int(), PerUserLimit: 1, TokenTTL: Duration(g.r.Int64N(1e12)),
			OpensAt: g.time(), Challenge: &Challenge{Kind: g.str()}, Queue: &Queue{AdmissionRate: 1, ClaimWindow: Duration(time.Minute), IdleTimeout: Duration(time.Minute)}}
	case TypeTokenRequested:
		return &TokenRequested{}
	case TypePurchaseRequested:
		return &PurchaseRequested{TokenID: g.id()}
	case TypeSaleUpdateRequested:
		return &SaleUpdateRequested{Action: []string{ActionOpen, ActionClose, g.str()}[g.r.IntN(3)]}
	case TypeQueueJoinRequested:
		return &QueueJoinRequested{}
	case TypeQueueLeaveRequested:
		return &QueueLeaveRequested{Ticket: g.id()}
	case TypeQueueSeenRequested:
		return &QueueSeenRequested{Tickets: g.tickets()}
	case TypeQueueClaimRequested:
		return &QueueClaimRequested{Ticket: g.id()}
	case TypeTokenIssued:
		return &TokenIssued{TokenID: g.id(), IssuedAt: g.time(), ExpiresAt: g.time(), AlreadyIssued: g.chance(0.3)}
	case TypeTokenDenied:
		return &TokenDenied{Reason: g.reason()}
	case TypeTokenExpired:
		return &TokenExpired{TokenID: g.id(), ExpiresAt: g.time()}
	case TypePurchaseAccepted:
		return &PurchaseAccepted{TokenID: g.id(), OrderID: g.id(), Units: g.int()}
	case TypePurchaseRefused:
		return &PurchaseRefused{TokenID: g.id(), Reason: g.reason(), OrderID: g.optStr()}
	case TypeSaleUpdated:
		u := &SaleUpdated{OpensAt: g.time()}
		if g.chance(0.5) {
			u.ClosesAt = g.time()
		}
		return u
	case TypeQueueJoined:
		j := &QueueJoined{Ticket: g.id(), Place: g.int(), Already: g.chance(0.3)}
		if g.chance(0.5) {
			j.PreIndex = g.int()
		}
		return j
	case TypeQueueJoinDenied:
		return &QueueJoinDenied{Reason: g.reason()}
	case TypeQueueShuffled:
		return &QueueShuffled{Seed: g.r.Uint64() >> g.r.IntN(64), PreQueue: g.int()}
	case TypeQueueAdmitted:
		return &QueueAdmitted{Ticket: g.id(), Place: g.int(), TokenID: g.id(), ClaimBy: g.time()}
	case TypeQueueClaimed:
		return &QueueClaimed{Ticket: g.id()}
	case TypeQueueSeen:
		return &QueueSeen{Tickets: g.tickets()}
	case TypeQueueLeft:
		return &QueueLeft{Ticket: g.id(), Reason: g.reason()}
	case TypeQueueClosed:
		return &QueueClosed{Reason: g.reason()}
	}
	return nil
}

// wrongData is a payload that is not t's: another type's, a nil pointer, a
// value instead of a pointer, a foreign type, nil.
func (g *gen) wrongData(t Type) any {
	switch g.r.IntN(6) {
	case 0:
		return nil
	case 1:
		return reflect.Zero(reflect.TypeOf(newData(t))).Interface() // a typed nil pointer
	case 2:
		return reflect.ValueOf(newData(t)).Elem().Interface() // the struct, not a pointer
	case 3:
		return &struct{ X int }{1}
	case 4:
		return g.data(TypeSaleCreated)
	}
	all := append(append([]Type{}, requestTypes...), decisionTypes...)
	return g.data(all[g.r.IntN(len(all))])
}

func (g *gen) event(t Type) Event {
	e := Event{ID: g.id(), Type: t, Version: SchemaVersion, Sale: g.sale(), Time: g.time(), Data: g.data(t)}
	if t.IsRequest() {
		e.Shopper = g.str()
		if e.Shopper == "" {
			e.Shopper = "s"
		}
		if g.chance(0.5) {
			e.ClientRequestID = g.str()
		}
	} else {
		e.Shopper = g.optStr()
		if !t.AnswersNoRequest() || g.chance(0.5) {
			e.Request = g.id()
		}
	}
	if !g.clean {
		switch g.r.IntN(20) {
		case 0:
			e.Data = g.wrongData(t)
		case 1:
			e.Type = Type(g.str())
		case 2:
			e.Shopper, e.Request, e.ClientRequestID = g.optStr(), g.optStr(), g.optStr()
		case 3:
			e.Version = g.r.IntN(5) // ignored: an event is written at the current version
		}
	}
	if t == TypeSaleUpdated && g.clean { // the decoder checks the schedule
		u := e.Data.(*SaleUpdated)
		if !ValidScheduleTime(u.ClosesAt) {
			u.ClosesAt = time.Time{}
		}
	}
	return e
}

func (g *gen) requests() RequestBatch {
	var rb RequestBatch
	n := 1 + g.r.IntN(8)
	if !g.clean && g.chance(0.05) {
		n = 0
	}
	for range n {
		t := requestTypes[g.r.IntN(len(requestTypes))]
		if !g.clean && g.chance(0.03) {
			t = decisionTypes[g.r.IntN(len(decisionTypes))]
		}
		rb.Requests = append(rb.Requests, g.event(t))
	}
	return rb
}

func (g *gen) decisions() DecisionBatch {
	db := DecisionBatch{Sale: g.sale(), Writer: g.str(), DecidedAt: g.time(),
		Head: Head{Version: uint64(1 + g.r.IntN(1000)), Cursor: g.r.Uint64() >> g.r.IntN(64), Stock: g.int(), Quota: g.int(),
			Issued: g.int(), Expired: g.int(), Redeemed: g.int(), OpensAtNs: g.int()}}
	if g.chance(0.5) {
		db.FromSeq = g.r.Uint64() >> g.r.IntN(64)
	}
	if g.chance(0.5) {
		db.Head.ClosesAtNs = g.int()
	}
	if !g.clean && g.chance(0.1) {
		db.Head.Version = 0
	}
	n := g.r.IntN(8)
	if g.chance(0.3) {
		db.Events = []Event{} // either way "events":[]
	}
	for range n {
		t := decisionTypes[g.r.IntN(len(decisionTypes))]
		if !g.clean && g.chance(0.03) {
			t = requestTypes[g.r.IntN(len(requestTypes))]
		}
		db.Events = append(db.Events, g.event(t))
	}
	return db
}

// sameEncoding fails unless the fast and the reference encoder agree: the
// same bytes, or the same error.
func sameEncoding(t *testing.T, what string, fast, ref func() ([]byte, error)) []byte {
	t.Helper()
	fb, ferr := fast()
	rb, rerr := ref()
	if (ferr == nil) != (rerr == nil) || (ferr != nil && ferr.Error() != rerr.Error()) {
		t.Fatalf("%s: fast error %v, reference error %v", what, ferr, rerr)
	}
	if !bytes.Equal(fb, rb) {
		t.Fatalf("%s: fast and reference encodings differ:\nfast %q\n ref %q", what, fb, rb)
	}
	return fb
}

// TestEncodeFastIsReference: random events of every type, with strings and
// times of every kind, encode to the same bytes (or fail alike) on both
// paths.
func TestEncodeFastIsReference(t *testing.T) {
	n := 3000
	if testing.Short() {
		n = 300
	}
	failed := 0
	for i := range n {
		g := newGen(uint64(i), i%4 == 0)
		rb := g.requests()
		if sameEncoding(t, fmt.Sprintf("requests #%d", i),
			func() ([]byte, error) { return EncodeRequests(rb) }, func() ([]byte, error) { return encodeRequestsRef(rb) }) == nil {
			failed++
		}
		db := g.decisions()
		sameEncoding(t, fmt.Sprintf("decisions #%d", i),
			func() ([]byte, error) { return EncodeDecisions(db) }, func() ([]byte, error) { return encodeDecisionsRef(db) })
		all := append(append([]Type{TypeSaleCreated}, requestTypes...), decisionTypes...)
		e := g.event(all[g.r.IntN(len(all))])
		sameEncoding(t, fmt.Sprintf("event #%d", i),
			func() ([]byte, error) { return EncodeEvent(e) }, func() ([]byte, error) { return encodeEventRef(e) })
	}
	if failed == 0 || failed == n {
		t.Errorf("%d of %d request batches failed to encode: the generator misses a side", failed, n)
	}
}

// TestDataMatchesIsSprintf: the type check accepts exactly what the %T
// comparison it replaced accepts.
func TestDataMatchesIsSprintf(t *testing.T) {
	all := append(append([]Type{TypeSaleCreated}, requestTypes...), decisionTypes...)
	var values []any
	for _, typ := range all {
		values = append(values, newData(typ), reflect.Zero(reflect.TypeOf(newData(typ))).Interface(), reflect.ValueOf(newData(typ)).Elem().Interface())
	}
	values = append(values, nil, 1, "x", &struct{}{}, new(Head), new(Event), new(Challenge))
	for _, typ := range all {
		want := newData(typ)
		for _, v := range values {
			if got, ref := dataMatches(typ, want, v), fmt.Sprintf("%T", want) == fmt.Sprintf("%T", v); got != ref {
				t.Errorf("dataMatches(%s, %T) = %v, %%T says %v", typ, v, got, ref)
			}
		}
	}
}

// TestValidSaleIDFast: the hand-written check is the regular expression.
func TestValidSaleIDFast(t *testing.T) {
	re := regexp.MustCompile(saleIDPatternSrc)
	check := func(id string) {
		if got, want := ValidSaleID(id), len(id) <= maxSaleIDLen && re.MatchString(id); got != want {
			t.Errorf("ValidSaleID(%q) = %v, the pattern says %v", id, got, want)
		}
	}
	alphabet := "az09_-AZ.\n \x00\xff/é"
	r := rand.New(rand.NewPCG(1, 2))
	for range 20000 {
		b := make([]byte, r.IntN(70))
		for i := range b {
			b[i] = alphabet[r.IntN(len(alphabet))]
		}
		check(string(b))
	}
	for _, id := range []string{"", "a", "-", "_", "a-", "a\n", strings.Repeat("a", 64), strings.Repeat("a", 65), "a" + strings.Repeat("-", 63)} {
		check(id)
	}
}

// decodeRefs decodes b with the three reference decoders; decodeAll with
// the public ones.
type decoded struct {
	e    Event
	eErr error
	r    RequestBatch
	rErr error
	d    DecisionBatch
	dErr error
}

func decodeRefs(b []byte) decoded {
	var x decoded
	x.e, x.eErr = decodeEventRef(b)
	x.r, x.rErr = decodeRequestsRef(b)
	x.d, x.dErr = decodeDecisionsRef(b)
	return x
}

func decodeAll(b []byte) decoded {
	var x decoded
	x.e, x.eErr = DecodeEvent(b)
	x.r, x.rErr = DecodeRequests(b)
	x.d, x.dErr = DecodeDecisions(b)
	return x
}

func sameErr(a, b error) bool {
	return (a == nil) == (b == nil) && (a == nil || a.Error() == b.Error())
}

// sameDecoding fails unless the fast decoders, where they accept b, give
// the reference decoders' values, and the public decoders give the
// reference's values and errors. It reports how many fast decoders
// accepted b.
func sameDecoding(t *testing.T, b []byte) int {
	t.Helper()
	ref := decodeRefs(b)
	accepted := 0
	if e, ok := decodeEventFast(b); ok {
		accepted++
		if ref.eErr != nil || !reflect.DeepEqual(e, ref.e) {
			t.Fatalf("event %q: fast %+v, reference %+v, %v", b, e, ref.e, ref.eErr)
		}
	}
	if r, ok := decodeRequestsFast(b); ok {
		accepted++
		if ref.rErr != nil || !reflect.DeepEqual(r, ref.r) {
			t.Fatalf("requests %q: fast %+v, reference %+v, %v", b, r, ref.r, ref.rErr)
		}
	}
	if d, ok := decodeDecisionsFast(b); ok {
		accepted++
		if ref.dErr != nil || !reflect.DeepEqual(d, ref.d) {
			t.Fatalf("decisions %q: fast %+v, reference %+v, %v", b, d, ref.d, ref.dErr)
		}
	}
	got := decodeAll(b)
	if !sameErr(got.eErr, ref.eErr) || !reflect.DeepEqual(got.e, ref.e) ||
		!sameErr(got.rErr, ref.rErr) || !reflect.DeepEqual(got.r, ref.r) ||
		!sameErr(got.dErr, ref.dErr) || !reflect.DeepEqual(got.d, ref.d) {
		t.Fatalf("%q: public decoders differ from the reference:\n got %+v\nwant %+v", b, got, ref)
	}
	return accepted
}

// decodeSeeds are the frozen files and encoded random batches.
func decodeSeeds(tb testing.TB) [][]byte {
	tb.Helper()
	var seeds [][]byte
	for _, dir := range []string{"testdata", "testdata/v1", "testdata/v2"} {
		names, err := filepath.Glob(filepath.Join(dir, "*.json"))
		if err != nil || len(names) == 0 {
			tb.Fatalf("no seeds in %s: %v", dir, err)
		}
		for _, name := range names {
			b, err := os.ReadFile(name)
			if err != nil {
				tb.Fatal(err)
			}
			seeds = append(seeds, b)
		}
	}
	for i := range 40 {
		g := newGen(uint64(1000+i), i%2 == 0)
		if b, err := EncodeRequests(g.requests()); err == nil {
			seeds = append(seeds, b)
		}
		if b, err := EncodeDecisions(g.decisions()); err == nil {
			seeds = append(seeds, b)
		}
		if b, err := EncodeEvent(g.event(decisionTypes[i%len(decisionTypes)])); err == nil {
			seeds = append(seeds, b)
		}
	}
	return seeds
}

// mutate changes b the ways that matter to the fast decoder: whitespace, a
// key's case, an escape, an unknown field, null, other number forms,
// duplicated keys, truncation, a flipped byte.
func mutate(r *rand.Rand, b []byte) []byte {
	s := string(b)
	at := func() int { return r.IntN(len(s) + 1) }
	switch r.IntN(16) {
	case 0:
		i := at()
		return []byte(s[:i] + []string{" ", "\n", "\t"}[r.IntN(3)] + s[i:])
	case 1:
		for _, k := range []string{`"id"`, `"sale"`, `"time"`, `"tokenId"`, `"reason"`, `"head"`, `"version"`, `"shopper"`, `"requests"`, `"events"`, `"data"`} {
			if strings.Contains(s, k) && r.IntN(3) == 0 {
				return []byte(strings.Replace(s, k, strings.ToUpper(k), 1))
			}
		}
	case 2:
		return []byte(strings.Replace(s, `"s`, `"\u0073`, 1))
	case 3:
		return []byte(strings.Replace(s, `{"`, `{"extra":1,"`, 1+r.IntN(3)))
	case 4:
		for _, v := range []string{`"request":"`, `"shopper":"`, `"tickets":[`, `"data":{`, `"time":"`} {
			if strings.Contains(s, v) && r.IntN(2) == 0 {
				return []byte(strings.Replace(s, v, v[:strings.Index(v, ":")+1]+`null,"x":`+v[strings.Index(v, ":")+1:], 1))
			}
		}
	case 5:
		for _, v := range []string{`"v":3`, `"units":1`, `"version":3`, `"place":`, `"seed":`, `"cursor":`} {
			if strings.Contains(s, v) && r.IntN(2) == 0 {
				return []byte(strings.Replace(s, v, v+[]string{".0", "e0", "0", "E1", ".5"}[r.IntN(5)], 1))
			}
		}
		return []byte(strings.Replace(s, `":1`, `":-0`, 1))
	case 6:
		return []byte(strings.Replace(s, `,"sale":"demo"`, `,"sale":"demo","sale":"demo"`, 1))
	case 7:
		return []byte(s[:r.IntN(len(s)+1)])
	case 8:
		if len(b) > 0 {
			c := bytes.Clone(b)
			c[r.IntN(len(c))] ^= byte(1 << r.IntN(8))
			return c
		}
	case 9:
		i := at()
		return []byte(s[:i] + string([]byte{byte(r.IntN(256))}) + s[i:])
	case 10:
		return []byte(strings.Replace(s, `"v":3`, `"v":`+fmt.Sprint(r.IntN(5)), -1))
	case 11:
		return []byte(strings.Replace(s, `Z"`, []string{`+01:00"`, `-00:00"`, `+23:59"`, `z"`, `.5Z"`, `"`}[r.IntN(6)], 1+r.IntN(3)))
	case 12:
		return []byte(strings.Replace(s, `"alreadyIssued":true`, `"alreadyIssued":false`, 1) + "\n")
	case 13:
		return []byte(strings.Replace(s, `"tickets":[`, `"tickets":[]`[:len(`"tickets":[`)+r.IntN(2)], 1))
	case 14:
		return []byte(strings.Replace(s, `,"fromSeq":`, `,"fromSeq":1,"fromSeq":`, 1))
	}
	return []byte(strings.Replace(s, `"type":"Token`, `"type":"Queue`, 1))
}

// TestDecodeFastIsReference: the frozen files, random encoded batches and
// mutations of them decode alike on both paths.
func TestDecodeFastIsReference(t *testing.T) {
	seeds := decodeSeeds(t)
	r := rand.New(rand.NewPCG(7, 8))
	n := 20000
	if testing.Short() {
		n = 2000
	}
	accepted, mutants := 0, 0
	for _, s := range seeds {
		accepted += sameDecoding(t, s)
	}
	for range n {
		b := seeds[r.IntN(len(seeds))]
		for range 1 + r.IntN(3) {
			b = mutate(r, b)
		}
		if a := sameDecoding(t, b); a > 0 {
			mutants++
			accepted += a
		}
	}
	t.Logf("fast path accepted %d decodings, %d of them of the %d mutants", accepted, mutants, n)
	if accepted == 0 {
		t.Fatal("the fast path accepted nothing")
	}
}

// FuzzDecodeFastIsReference: for any input, the fast decoders accept only
// what the reference decoders decode, to the same value, and the public
// decoders give the reference's values and errors.
func FuzzDecodeFastIsReference(f *testing.F) {
	for _, s := range decodeSeeds(f) {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, b []byte) { sameDecoding(t, b) })
}

// FuzzEncodeFastIsReference: random events from a fuzzed seed encode alike.
func FuzzEncodeFastIsReference(f *testing.F) {
	for i := range 20 {
		f.Add(uint64(i), i%3 == 0)
	}
	f.Fuzz(func(t *testing.T, seed uint64, clean bool) {
		g := newGen(seed, clean)
		rb, db := g.requests(), g.decisions()
		b := sameEncoding(t, "requests", func() ([]byte, error) { return EncodeRequests(rb) }, func() ([]byte, error) { return encodeRequestsRef(rb) })
		sameDecoding(t, b)
		b = sameEncoding(t, "decisions", func() ([]byte, error) { return EncodeDecisions(db) }, func() ([]byte, error) { return encodeDecisionsRef(db) })
		sameDecoding(t, b)
	})
}

// TestFastPathIsTaken: what our encoder writes is encoded and decoded
// without the reference path, so that the fast path cannot rot unseen.
func TestFastPathIsTaken(t *testing.T) {
	enc0, dec0 := encodeFallbacks.Load(), decodeFallbacks.Load()
	for i := range 500 {
		g := newGen(uint64(i), true)
		rb, db := g.requests(), g.decisions()
		b, err := EncodeRequests(rb)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := DecodeRequests(b); err != nil {
			t.Fatalf("%s: %v", b, err)
		}
		if b, err = EncodeDecisions(db); err != nil {
			t.Fatal(err)
		}
		if _, err := DecodeDecisions(b); err != nil {
			t.Fatalf("%s: %v", b, err)
		}
		e := g.event(decisionTypes[i%len(decisionTypes)])
		if b, err = EncodeEvent(e); err != nil {
			t.Fatal(err)
		}
		if _, err := DecodeEvent(b); err != nil {
			t.Fatalf("%s: %v", b, err)
		}
	}
	for _, f := range []func(){
		func() { _, _ = EncodeRequests(sampleRequests()) },
		func() { _, _ = EncodeDecisions(sampleDecisions()) },
		func() { b, _ := os.ReadFile("testdata/requests.golden.json"); _, _ = DecodeRequests(b) },
		func() { b, _ := os.ReadFile("testdata/decisions.golden.json"); _, _ = DecodeDecisions(b) },
		func() { b, _ := os.ReadFile("testdata/queue-requests.golden.json"); _, _ = DecodeRequests(b) },
		func() { b, _ := os.ReadFile("testdata/queue-decisions.golden.json"); _, _ = DecodeDecisions(b) },
	} {
		f()
	}
	if n := encodeFallbacks.Load() - enc0; n != 0 {
		t.Errorf("%d canonical encodings took the reference path", n)
	}
	if n := decodeFallbacks.Load() - dec0; n != 0 {
		t.Errorf("%d canonical decodings took the reference path", n)
	}
	// And what it does not hand-code does take it.
	if _, err := EncodeEvent(sampleSale()); err != nil || encodeFallbacks.Load() == enc0 {
		t.Errorf("a SaleCreated did not take the reference encoder: %v", err)
	}
	b, _ := os.ReadFile("testdata/v2/requests.json")
	if _, err := DecodeRequests(b); err != nil || decodeFallbacks.Load() == dec0 {
		t.Errorf("a version 2 batch did not take the reference decoder: %v", err)
	}
}

// TestFastDecodeAllocations: a batch of 64 token requests costs about the
// strings it holds (id, shopper, client request id), its payloads and the
// slice, not a reflective decode's many more.
func TestFastDecodeAllocations(t *testing.T) {
	b, err := EncodeRequests(benchRequests())
	if err != nil {
		t.Fatal(err)
	}
	allocs := testing.AllocsPerRun(20, func() { _, _ = DecodeRequests(b) })
	if max := float64(64*4 + 4); allocs > max {
		t.Errorf("DecodeRequests of 64 token requests: %v allocations, want at most %v", allocs, max)
	}
	rb := benchRequests()
	allocs = testing.AllocsPerRun(20, func() { _, _ = EncodeRequests(rb) })
	if allocs > 2 { // the result; the scratch buffer is pooled
		t.Errorf("EncodeRequests of 64 token requests: %v allocations, want at most 2", allocs)
	}
}

// TestDecodedStringsDoNotAliasTheInput: callers may reuse the buffer they
// decoded from (a NATS message's).
func TestDecodedStringsDoNotAliasTheInput(t *testing.T) {
	for _, name := range []string{"requests.golden.json", "queue-requests.golden.json", "decisions.golden.json", "queue-decisions.golden.json"} {
		b, err := os.ReadFile(filepath.Join("testdata", name))
		if err != nil {
			t.Fatal(err)
		}
		buf := bytes.Clone(b)
		var got, want any
		if strings.Contains(name, "requests") {
			got, _ = DecodeRequests(buf)
			want, _ = decodeRequestsRef(b)
		} else {
			got, _ = DecodeDecisions(buf)
			want, _ = decodeDecisionsRef(b)
		}
		for i := range buf {
			buf[i] = 'x'
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("%s: decoded values changed with the input buffer", name)
		}
	}
}

// benchRequests is a front's full batch: 64 token requests.
func benchRequests() RequestBatch {
	rb := RequestBatch{Requests: make([]Event, 64)}
	for i := range rb.Requests {
		rb.Requests[i] = Event{ID: DerivedID(at, fmt.Sprint("r", i)), Type: TypeTokenRequested, Version: SchemaVersion, Sale: "bench", Time: at.Add(time.Duration(i) * time.Microsecond),
			Shopper: DerivedID(at, fmt.Sprint("s", i)), ClientRequestID: fmt.Sprint("click-", i), Data: &TokenRequested{}}
	}
	return rb
}

// benchDecisions is a writer's large batch: 1000 decisions, mostly tokens
// issued, some denied.
func benchDecisions() DecisionBatch {
	db := DecisionBatch{Sale: "bench", Writer: "node-1/1", DecidedAt: at, FromSeq: 100,
		Head: Head{Version: 42, Cursor: 115, Stock: 100000, Quota: 120000, Issued: 5000, OpensAtNs: at.UnixNano()}, Events: make([]Event, 1000)}
	for i := range db.Events {
		e := Event{ID: DerivedID(at, fmt.Sprint("d", i)), Version: SchemaVersion, Sale: "bench", Time: at,
			Shopper: DerivedID(at, fmt.Sprint("s", i)), Request: DerivedID(at, fmt.Sprint("r", i))}
		if i%4 == 3 {
			e.Type, e.Data = TypeTokenDenied, &TokenDenied{Reason: ReasonLimitReached}
		} else {
			e.Type, e.Data = TypeTokenIssued, &TokenIssued{TokenID: e.Request, IssuedAt: at, ExpiresAt: at.Add(5 * time.Minute).Truncate(time.Second)}
		}
		db.Events[i] = e
	}
	return db
}

func benchCodec[T any](b *testing.B, fast, ref func() (T, error)) {
	for _, c := range []struct {
		name string
		f    func() (T, error)
	}{{"fast", fast}, {"reference", ref}} {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := c.f(); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkEncodeRequests(b *testing.B) {
	rb := benchRequests()
	benchCodec(b, func() ([]byte, error) { return EncodeRequests(rb) }, func() ([]byte, error) { return encodeRequestsRef(rb) })
}

func BenchmarkDecodeRequests(b *testing.B) {
	m, _ := EncodeRequests(benchRequests())
	benchCodec(b, func() (RequestBatch, error) { return DecodeRequests(m) }, func() (RequestBatch, error) { return decodeRequestsRef(m) })
}

func BenchmarkEncodeDecisions(b *testing.B) {
	db := benchDecisions()
	benchCodec(b, func() ([]byte, error) { return EncodeDecisions(db) }, func() ([]byte, error) { return encodeDecisionsRef(db) })
}

func BenchmarkDecodeDecisions(b *testing.B) {
	m, _ := EncodeDecisions(benchDecisions())
	benchCodec(b, func() (DecisionBatch, error) { return DecodeDecisions(m) }, func() (DecisionBatch, error) { return decodeDecisionsRef(m) })
}
