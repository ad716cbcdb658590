-- Requests, grants and issued certificates. Times are unix seconds (UTC); lists are JSON arrays.

-- The next serial number to hand out. One row; serials are reserved from it in blocks inside a
-- transaction, so no two certificates ever share a serial and serials only grow.
CREATE TABLE serial_counter (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    next_serial INTEGER NOT NULL CHECK (next_serial >= 1)
);
INSERT INTO serial_counter (id, next_serial) VALUES (1, 1);

CREATE TABLE access_requests (
    id TEXT PRIMARY KEY,
    status TEXT NOT NULL CHECK (status IN ('pending', 'approved', 'denied', 'cancelled', 'expired')),
    profile TEXT NOT NULL,
    target TEXT NOT NULL,
    unix_users TEXT NOT NULL,
    principals TEXT NOT NULL,
    duration_secs INTEGER NOT NULL CHECK (duration_secs > 0),
    reason TEXT NOT NULL,
    ticket TEXT,
    requester_issuer TEXT NOT NULL,
    requester_subject TEXT NOT NULL,
    requester_email TEXT,
    requester_groups TEXT NOT NULL,
    public_key TEXT NOT NULL,
    client_address TEXT NOT NULL,
    user_agent TEXT,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    required_approvals INTEGER NOT NULL,
    decision_rules TEXT NOT NULL
);
CREATE INDEX access_requests_by_requester ON access_requests (requester_issuer, requester_subject);
CREATE INDEX access_requests_by_status ON access_requests (status);

CREATE TABLE grants (
    id TEXT PRIMARY KEY,
    request_id TEXT NOT NULL UNIQUE REFERENCES access_requests (id),
    profile TEXT NOT NULL,
    target TEXT NOT NULL,
    principals TEXT NOT NULL,
    starts_at INTEGER NOT NULL,
    ends_at INTEGER NOT NULL CHECK (ends_at > starts_at),
    holder_issuer TEXT NOT NULL,
    holder_subject TEXT NOT NULL,
    holder_email TEXT,
    created_at INTEGER NOT NULL
);
CREATE INDEX grants_by_holder ON grants (holder_issuer, holder_subject, ends_at);

CREATE TABLE certificates (
    serial INTEGER PRIMARY KEY,
    grant_id TEXT NOT NULL REFERENCES grants (id),
    key_id TEXT NOT NULL UNIQUE,
    principals TEXT NOT NULL,
    valid_after INTEGER NOT NULL,
    valid_before INTEGER NOT NULL CHECK (valid_before > valid_after),
    public_key_fingerprint TEXT NOT NULL,
    ca_key_fingerprint TEXT NOT NULL,
    certificate TEXT NOT NULL,
    holder_issuer TEXT NOT NULL,
    holder_subject TEXT NOT NULL,
    holder_email TEXT,
    holder_groups TEXT NOT NULL,
    client_address TEXT NOT NULL,
    user_agent TEXT,
    issued_at INTEGER NOT NULL
);
CREATE INDEX certificates_by_grant ON certificates (grant_id, serial);
