-- crm-responder schema, version 1.
--
-- Applied at startup when PRAGMA user_version is 0. Never edit this file once
-- shipped: later changes go to migrations/NNNN_*.sql, each bumping
-- user_version by one (see src/store/migrate.rs).
--
-- Times are TEXT in RFC 3339 UTC with milliseconds ("2026-11-21T14:20:03.123Z"),
-- so they sort as strings.

-- A person the sales team may talk to.
CREATE TABLE leads (
    id           INTEGER PRIMARY KEY,
    name         TEXT,
    -- Normalised name (lowercase, single spaces) and its reverse: sorted
    -- indexes whose neighbours are the duplicate-detection candidates.
    name_key     TEXT,
    name_rev     TEXT,
    description  TEXT,
    status       TEXT NOT NULL DEFAULT 'new',
    -- Set when this (anonymous) lead was folded into another one.
    merged_into  INTEGER REFERENCES leads(id),
    created_at   TEXT NOT NULL,
    updated_at   TEXT NOT NULL
);
CREATE INDEX leads_name_key ON leads(name_key) WHERE name_key IS NOT NULL;
CREATE INDEX leads_name_rev ON leads(name_rev) WHERE name_rev IS NOT NULL;

-- Emails and phones. The normalised value identifies exactly one lead.
CREATE TABLE lead_emails (
    id          INTEGER PRIMARY KEY,
    lead_id     INTEGER NOT NULL REFERENCES leads(id),
    value       TEXT NOT NULL UNIQUE,   -- trimmed, lowercased
    raw         TEXT NOT NULL,          -- as received
    is_primary  INTEGER NOT NULL DEFAULT 0 CHECK (is_primary IN (0, 1)),
    created_at  TEXT NOT NULL
);
CREATE INDEX lead_emails_lead ON lead_emails(lead_id);
CREATE UNIQUE INDEX lead_emails_one_primary ON lead_emails(lead_id) WHERE is_primary = 1;

CREATE TABLE lead_phones (
    id          INTEGER PRIMARY KEY,
    lead_id     INTEGER NOT NULL REFERENCES leads(id),
    value       TEXT NOT NULL UNIQUE,   -- E.164, or the digits of an unparseable number
    raw         TEXT NOT NULL,
    is_primary  INTEGER NOT NULL DEFAULT 0 CHECK (is_primary IN (0, 1)),
    created_at  TEXT NOT NULL
);
CREATE INDEX lead_phones_lead ON lead_phones(lead_id);
CREATE UNIQUE INDEX lead_phones_one_primary ON lead_phones(lead_id) WHERE is_primary = 1;

-- A platform's own visitor id (Jivo visitor number, Rocket.Chat visitor id, …).
CREATE TABLE lead_visitors (
    platform    TEXT NOT NULL,
    visitor_id  TEXT NOT NULL,
    lead_id     INTEGER NOT NULL REFERENCES leads(id),
    created_at  TEXT NOT NULL,
    PRIMARY KEY (platform, visitor_id)
) WITHOUT ROWID;
CREATE INDEX lead_visitors_lead ON lead_visitors(lead_id);

-- Custom fields and tags.
CREATE TABLE lead_fields (
    lead_id     INTEGER NOT NULL REFERENCES leads(id),
    key         TEXT NOT NULL,
    value       TEXT NOT NULL,
    updated_at  TEXT NOT NULL,
    PRIMARY KEY (lead_id, key)
) WITHOUT ROWID;

CREATE TABLE lead_tags (
    lead_id     INTEGER NOT NULL REFERENCES leads(id),
    tag         TEXT NOT NULL,
    PRIMARY KEY (lead_id, tag)
) WITHOUT ROWID;

-- A chat, keyed by platform and the platform's chat or room id.
CREATE TABLE conversations (
    id          INTEGER PRIMARY KEY,
    lead_id     INTEGER NOT NULL REFERENCES leads(id),
    platform    TEXT NOT NULL,
    chat_id     TEXT NOT NULL,
    agent       TEXT,
    closed      INTEGER NOT NULL DEFAULT 0 CHECK (closed IN (0, 1)),
    started_at  TEXT NOT NULL,
    updated_at  TEXT NOT NULL,
    UNIQUE (platform, chat_id)
);
CREATE INDEX conversations_lead ON conversations(lead_id, started_at);

CREATE TABLE messages (
    id               INTEGER PRIMARY KEY,
    conversation_id  INTEGER NOT NULL REFERENCES conversations(id),
    -- The platform's message id, or one derived from the content: a message
    -- delivered twice is stored once.
    ext_id           TEXT NOT NULL,
    sender           TEXT NOT NULL CHECK (sender IN ('visitor', 'agent', 'system')),
    author           TEXT,
    text             TEXT NOT NULL,
    at               TEXT,
    UNIQUE (conversation_id, ext_id)
);

-- Offline messages, tickets.
CREATE TABLE notes (
    id          INTEGER PRIMARY KEY,
    lead_id     INTEGER NOT NULL REFERENCES leads(id),
    platform    TEXT NOT NULL,
    ext_id      TEXT NOT NULL,
    kind        TEXT NOT NULL,
    text        TEXT NOT NULL,
    at          TEXT NOT NULL,
    UNIQUE (platform, kind, ext_id)
);
CREATE INDEX notes_lead ON notes(lead_id, at);

-- Every raw delivery, stored before it is applied, in the same transaction
-- as its effects. idem_key makes a redelivery a no-op.
CREATE TABLE deliveries (
    id           INTEGER PRIMARY KEY,
    platform     TEXT NOT NULL,
    event        TEXT NOT NULL,
    idem_key     TEXT NOT NULL UNIQUE,
    received_at  TEXT NOT NULL,
    body         BLOB NOT NULL,
    status       TEXT NOT NULL CHECK (status IN ('applied', 'failed')),
    error        TEXT,
    lead_id      INTEGER REFERENCES leads(id)
);
CREATE INDEX deliveries_failed ON deliveries(received_at) WHERE status = 'failed';

-- What changed on a lead, from what to what, and which delivery caused it.
CREATE TABLE history (
    id           INTEGER PRIMARY KEY,
    lead_id      INTEGER NOT NULL REFERENCES leads(id),
    at           TEXT NOT NULL,
    field        TEXT NOT NULL,
    old          TEXT,
    new          TEXT,
    delivery_id  INTEGER REFERENCES deliveries(id),
    source       TEXT NOT NULL,
    -- The decision behind the change, as JSON (rule, matches, policy).
    explanation  TEXT
);
CREATE INDEX history_lead ON history(lead_id, id);
CREATE INDEX history_delivery ON history(delivery_id) WHERE delivery_id IS NOT NULL;

-- Possible duplicates: linked for a person to look at, never merged.
-- Stored once per pair with lead_a < lead_b.
CREATE TABLE duplicate_links (
    lead_a      INTEGER NOT NULL REFERENCES leads(id),
    lead_b      INTEGER NOT NULL REFERENCES leads(id),
    score       REAL NOT NULL,
    reason      TEXT NOT NULL,
    created_at  TEXT NOT NULL,
    PRIMARY KEY (lead_a, lead_b),
    CHECK (lead_a < lead_b)
) WITHOUT ROWID;
CREATE INDEX duplicate_links_b ON duplicate_links(lead_b);
