-- crm-responder schema: outbound webhooks (the transactional outbox).
--
-- An event is written in the same transaction as the change that caused
-- it, with its body as it will be signed and sent (the lead as it was
-- then), and one delivery row per endpoint subscribed at that moment. The
-- worker sends a lead's deliveries to an endpoint in event order: only the
-- oldest pending one of each (endpoint, lead) is ever due. `lease_until`
-- (ms since the epoch) keeps a delivery to one sender at a time across
-- instances; `next_at` is when it may be tried (again). An endpoint that
-- answered 410 Gone is disabled for the URL it had.

CREATE TABLE outbound_events (
    id          INTEGER PRIMARY KEY,
    msg_id      TEXT NOT NULL UNIQUE,
    type        TEXT NOT NULL,
    lead_id     INTEGER NOT NULL,
    created_at  TEXT NOT NULL,
    body        TEXT NOT NULL
);
CREATE INDEX outbound_events_lead ON outbound_events(lead_id);
CREATE INDEX outbound_events_created ON outbound_events(created_at, id);

CREATE TABLE outbound_deliveries (
    event_id     INTEGER NOT NULL REFERENCES outbound_events(id) ON DELETE CASCADE,
    endpoint     TEXT NOT NULL,
    lead_id      INTEGER NOT NULL,
    state        TEXT NOT NULL CHECK (state IN ('pending', 'delivered', 'failed')),
    attempts     INTEGER NOT NULL DEFAULT 0,
    first_at     INTEGER NOT NULL,
    next_at      INTEGER NOT NULL,
    lease_until  INTEGER,
    last_error   TEXT,
    done_at      INTEGER,
    PRIMARY KEY (endpoint, event_id)
) WITHOUT ROWID;
CREATE INDEX outbound_due ON outbound_deliveries(endpoint, next_at, event_id)
    WHERE state = 'pending';
CREATE INDEX outbound_lanes ON outbound_deliveries(endpoint, lead_id, event_id)
    WHERE state = 'pending';

CREATE TABLE outbound_endpoints (
    name             TEXT PRIMARY KEY,
    disabled_url     TEXT,
    disabled_at      TEXT,
    last_success_at  TEXT,
    last_error       TEXT,
    last_error_at    TEXT
) WITHOUT ROWID;
