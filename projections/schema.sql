-- flashgate projections, schema version 1.
--
-- Every table is derived from the FLASHGATE stream and can be rebuilt by
-- replaying it. Times are UTC text in RFC 3339 with nine fractional digits
-- (fixed width, so text order is time order); NULL where a column does not
-- apply to a row.

CREATE TABLE meta (
	key   TEXT PRIMARY KEY,
	value TEXT
);

CREATE TABLE sales (
	id             TEXT PRIMARY KEY,
	seq            INTEGER,
	stock          INTEGER,
	quota          INTEGER,
	quota_buffer   REAL,
	per_user_limit INTEGER,
	token_ttl_ms   INTEGER,
	opens_at       TEXT,
	closes_at      TEXT
);

CREATE TABLE requests (
	id                TEXT PRIMARY KEY,
	sale              TEXT,
	seq               INTEGER,
	idx               INTEGER,
	type              TEXT,
	shopper           TEXT,
	client_request_id TEXT,
	token_id          TEXT,
	received_at       TEXT
);

CREATE TABLE batches (
	sale       TEXT,
	version    INTEGER,
	seq        INTEGER,
	writer     TEXT,
	decided_at TEXT,
	from_seq   INTEGER,
	cursor     INTEGER,
	stock      INTEGER,
	quota      INTEGER,
	issued     INTEGER,
	expired    INTEGER,
	redeemed   INTEGER,
	PRIMARY KEY (sale, version)
);

CREATE TABLE decisions (
	id             TEXT PRIMARY KEY,
	sale           TEXT,
	version        INTEGER,
	idx            INTEGER,
	seq            INTEGER,
	type           TEXT,
	request        TEXT,
	shopper        TEXT,
	token_id       TEXT,
	order_id       TEXT,
	reason         TEXT,
	already_issued INTEGER,
	expires_at     TEXT,
	decided_at     TEXT
);
CREATE INDEX decisions_request ON decisions (request);

CREATE TABLE tokens (
	id         TEXT PRIMARY KEY,
	sale       TEXT,
	shopper    TEXT,
	request    TEXT,
	issued_at  TEXT,
	expires_at TEXT,
	status     TEXT,
	order_id   TEXT,
	closed_at  TEXT
);

CREATE TABLE orders (
	id         TEXT PRIMARY KEY,
	sale       TEXT,
	shopper    TEXT,
	token_id   TEXT,
	request    TEXT,
	units      INTEGER,
	status     TEXT,
	created_at TEXT
);

CREATE TABLE audit_trail (
	seq      INTEGER,
	idx      INTEGER,
	event_id TEXT,
	type     TEXT,
	sale     TEXT,
	time     TEXT,
	body     TEXT,
	PRIMARY KEY (seq, idx)
);

CREATE TABLE anomalies (
	seq  INTEGER,
	sale TEXT,
	what TEXT
);
