-- Revocations, the KRL version, enrolled hosts and their certificates. Times are unix seconds
-- (UTC); lists are JSON arrays.

-- The KRL version. One row; incremented in the transaction that records a revocation, so it
-- only grows. Version 1 is the empty list.
CREATE TABLE krl_state (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    version INTEGER NOT NULL CHECK (version >= 1)
);
INSERT INTO krl_state (id, version) VALUES (1, 1);

CREATE TABLE revocations (
    id TEXT PRIMARY KEY,
    kind TEXT NOT NULL CHECK (kind IN ('grant', 'serial', 'user', 'key')),
    target TEXT NOT NULL,
    reason TEXT NOT NULL,
    actor_issuer TEXT NOT NULL,
    actor_subject TEXT NOT NULL,
    actor_email TEXT,
    created_at INTEGER NOT NULL,
    krl_version INTEGER NOT NULL
);

-- Every certificate of a revoked grant is on the KRL while unexpired, including any issued for
-- it later.
CREATE TABLE revoked_grants (
    grant_id TEXT PRIMARY KEY REFERENCES grants (id),
    revocation_id TEXT NOT NULL REFERENCES revocations (id)
);

CREATE TABLE revoked_certificates (
    serial INTEGER PRIMARY KEY REFERENCES certificates (serial),
    revocation_id TEXT NOT NULL REFERENCES revocations (id)
);

-- Revoked public keys stay on the KRL until removed on purpose.
CREATE TABLE revoked_keys (
    fingerprint TEXT PRIMARY KEY,
    public_key TEXT NOT NULL,
    revocation_id TEXT NOT NULL REFERENCES revocations (id)
);

CREATE INDEX certificates_by_key ON certificates (public_key_fingerprint);
CREATE INDEX certificates_by_ca_key ON certificates (ca_key_fingerprint, valid_before);
CREATE INDEX grants_by_holder_email ON grants (holder_email, ends_at);

-- Only the SHA-256 of a token is kept; the token itself is shown once.
CREATE TABLE host_enrollment_tokens (
    token_sha256 TEXT PRIMARY KEY,
    host_name TEXT NOT NULL,
    groups TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    consumed_at INTEGER
);

CREATE TABLE hosts (
    name TEXT PRIMARY KEY,
    public_key TEXT NOT NULL,
    public_key_fingerprint TEXT NOT NULL,
    groups TEXT NOT NULL,
    enrolled_at INTEGER NOT NULL
);

CREATE TABLE host_certificates (
    serial INTEGER PRIMARY KEY,
    host_name TEXT NOT NULL REFERENCES hosts (name),
    key_id TEXT NOT NULL UNIQUE,
    principals TEXT NOT NULL,
    valid_after INTEGER NOT NULL,
    valid_before INTEGER NOT NULL CHECK (valid_before > valid_after),
    public_key_fingerprint TEXT NOT NULL,
    ca_key_fingerprint TEXT NOT NULL,
    certificate TEXT NOT NULL,
    issued_at INTEGER NOT NULL
);
CREATE INDEX host_certificates_by_host ON host_certificates (host_name, serial);
CREATE INDEX host_certificates_by_ca_key ON host_certificates (ca_key_fingerprint, valid_before);
