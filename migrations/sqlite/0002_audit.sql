-- The audit log: an append-only hash chain of records and the checkpoints signed over it.
-- `body` is the canonical JSON the record's hash covers; the other columns only serve filters
-- (verification checks them against the body). Times are unix microseconds.

CREATE TABLE audit_records (
    seq INTEGER PRIMARY KEY CHECK (seq >= 1),
    event TEXT NOT NULL,
    recorded_at INTEGER NOT NULL,
    actor TEXT,
    host TEXT,
    profile TEXT,
    grant_id TEXT,
    request_id TEXT,
    serial INTEGER,
    body TEXT NOT NULL,
    hash TEXT NOT NULL CHECK (length(hash) = 64)
);
CREATE INDEX audit_records_by_grant ON audit_records (grant_id, seq);
CREATE INDEX audit_records_by_request ON audit_records (request_id, seq);
CREATE INDEX audit_records_by_serial ON audit_records (serial, seq);
CREATE INDEX audit_records_by_actor ON audit_records (actor, seq);
CREATE INDEX audit_records_by_time ON audit_records (recorded_at);

CREATE TABLE audit_checkpoints (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    record_count INTEGER NOT NULL CHECK (record_count >= 0),
    head_hash TEXT NOT NULL CHECK (length(head_hash) = 64),
    signed_at INTEGER NOT NULL,
    signature TEXT NOT NULL
);

-- Append-only, so that no code path of the CA can change history by mistake. Someone with the
-- database file can drop these; the hash chain and the checkpoints are what expose them.
CREATE TRIGGER audit_records_no_update BEFORE UPDATE ON audit_records
BEGIN SELECT RAISE(ABORT, 'audit records are append-only'); END;
CREATE TRIGGER audit_records_no_delete BEFORE DELETE ON audit_records
BEGIN SELECT RAISE(ABORT, 'audit records are append-only'); END;
CREATE TRIGGER audit_checkpoints_no_update BEFORE UPDATE ON audit_checkpoints
BEGIN SELECT RAISE(ABORT, 'audit checkpoints are append-only'); END;
CREATE TRIGGER audit_checkpoints_no_delete BEFORE DELETE ON audit_checkpoints
BEGIN SELECT RAISE(ABORT, 'audit checkpoints are append-only'); END;
