// Package natsurl keeps NATS credentials out of what flashgate prints. A
// NATS server list is comma-separated; entries may have no scheme
// ("user:pw@host:4222" connects as well as "nats://user:pw@host:4222").
package natsurl

import "strings"

// Redact returns urls with the credentials of every entry replaced by
// "<redacted>", for messages and logs.
func Redact(urls string) string { return rewrite(urls, "<redacted>@") }

// Strip returns urls with the credentials of every entry removed, for values
// that must still work (give the credentials another way).
func Strip(urls string) string { return rewrite(urls, "") }

// HasCredentials reports whether any entry carries credentials.
func HasCredentials(urls string) bool { return Strip(urls) != clean(urls) }

func clean(urls string) string {
	parts := strings.Split(urls, ",")
	for i, p := range parts {
		parts[i] = strings.TrimSpace(p)
	}
	return strings.Join(parts, ",")
}

func rewrite(urls, with string) string {
	parts := strings.Split(urls, ",")
	for i, p := range parts {
		p = strings.TrimSpace(p)
		prefix, rest := "", p
		if scheme, after, ok := strings.Cut(p, "://"); ok {
			prefix, rest = scheme+"://", after
		}
		authority := rest
		if j := strings.IndexAny(rest, "/?#"); j >= 0 {
			authority = rest[:j]
		}
		if at := strings.LastIndex(authority, "@"); at >= 0 {
			rest = with + rest[at+1:]
		}
		parts[i] = prefix + rest
	}
	return strings.Join(parts, ",")
}
