-- Login sessions that host agents report: one row per SSH connection opened on an enrolled
-- host with one of the CA's certificates. A row is open while `ended_at` is NULL. Times are
-- unix seconds (UTC). The audit log keeps the history; this table answers "who is logged in
-- where now".
CREATE TABLE host_sessions (
    host TEXT NOT NULL REFERENCES hosts (name),
    session_id TEXT NOT NULL,
    unix_user TEXT NOT NULL,
    serial INTEGER NOT NULL REFERENCES certificates (serial),
    grant_id TEXT NOT NULL REFERENCES grants (id),
    key_id TEXT NOT NULL,
    source_address TEXT,
    tty TEXT,
    started_at INTEGER NOT NULL,
    valid_before INTEGER NOT NULL,
    reported_at INTEGER NOT NULL,
    ended_at INTEGER,
    end_reason TEXT,
    PRIMARY KEY (host, session_id)
);
CREATE INDEX host_sessions_open ON host_sessions (ended_at, host);
