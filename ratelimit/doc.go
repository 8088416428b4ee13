// Package ratelimit is the rate limiter of flashgate's HTTP front: token
// buckets keyed by client address or shopper, grouped by route, with the
// response headers of draft-ietf-httpapi-ratelimit-headers-09 and the
// client address behind trusted proxies.
//
// A Policy is one token bucket (capacity, refill rate, cost per request)
// applied to one route group and counted by one kind of key. Take is the
// bucket arithmetic alone, a pure function. A Limiter holds the buckets of
// every key in a bounded, sharded table and applies the policies of a group
// to a key with Check; its policies and share of a global limit can be
// replaced while it runs.
//
// The package knows nothing of HTTP handlers, NATS or metrics: the caller
// maps a request to (group, route, kind, key), writes the headers from the
// Decision and counts the results.
package ratelimit
