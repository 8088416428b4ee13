package natsurl

import "testing"

func TestRedactAndStrip(t *testing.T) {
	for _, c := range []struct{ in, redacted, stripped string }{
		{"nats://127.0.0.1:4222", "nats://127.0.0.1:4222", "nats://127.0.0.1:4222"},
		{"nats://u:pw@h:4222", "nats://<redacted>@h:4222", "nats://h:4222"},
		{"u:pw@h:4222", "<redacted>@h:4222", "h:4222"},
		{"tls://tok@h", "tls://<redacted>@h", "tls://h"},
		{"nats://a:1@h1, b:2@h2,nats://h3", "nats://<redacted>@h1,<redacted>@h2,nats://h3", "nats://h1,h2,nats://h3"},
		{"nats://u:p@ss@h/x?y", "nats://<redacted>@h/x?y", "nats://h/x?y"},
	} {
		if got := Redact(c.in); got != c.redacted {
			t.Errorf("Redact(%q) = %q, want %q", c.in, got, c.redacted)
		}
		if got := Strip(c.in); got != c.stripped {
			t.Errorf("Strip(%q) = %q, want %q", c.in, got, c.stripped)
		}
		if HasCredentials(c.in) != (c.redacted != clean(c.in)) {
			t.Errorf("HasCredentials(%q) = %v", c.in, HasCredentials(c.in))
		}
	}
}
