-- The approval workflow: reviews, the history of every request, planned starts, extensions and
-- break-glass acknowledgements. Nothing here is ever deleted when a request expires.

ALTER TABLE access_requests ADD COLUMN start_at INTEGER;
ALTER TABLE access_requests ADD COLUMN extends_grant TEXT REFERENCES grants (id);
ALTER TABLE access_requests ADD COLUMN break_glass INTEGER NOT NULL DEFAULT 0;
ALTER TABLE access_requests ADD COLUMN acknowledged_by TEXT;
ALTER TABLE access_requests ADD COLUMN acknowledged_at INTEGER;
ALTER TABLE access_requests ADD COLUMN decided_at INTEGER;
CREATE INDEX access_requests_open_break_glass
    ON access_requests (break_glass, acknowledged_at);

-- One row per reviewer and request: the primary key is what makes each approver count once,
-- even when the same person approves twice at the same moment.
CREATE TABLE reviews (
    request_id TEXT NOT NULL REFERENCES access_requests (id),
    reviewer_issuer TEXT NOT NULL,
    reviewer_subject TEXT NOT NULL,
    reviewer_email TEXT,
    verdict TEXT NOT NULL CHECK (verdict IN ('approve', 'deny')),
    comment TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (request_id, reviewer_issuer, reviewer_subject)
);

CREATE TABLE request_events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    request_id TEXT NOT NULL REFERENCES access_requests (id),
    at INTEGER NOT NULL,
    actor TEXT NOT NULL,
    kind TEXT NOT NULL,
    detail TEXT NOT NULL
);
CREATE INDEX request_events_by_request ON request_events (request_id, id);

-- Whether the "break-glass grant ended without review" alert was sent, so it is sent once.
ALTER TABLE access_requests ADD COLUMN unreviewed_alerted INTEGER NOT NULL DEFAULT 0;
