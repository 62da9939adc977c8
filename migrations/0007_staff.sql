-- crm-responder schema, version 7: the sales team works its leads.
--
-- A lead gains its owner (a sales user's name), a version that grows with
-- every change (the API's ETag; forms carry it), and where it came from
-- (`source`, a JSON object set when the first delivery creates it, and its
-- platform, channel and campaign apart, for filtering: the channel is the
-- platform's own routing of the chat, Jivo's widget, Rocket.Chat's
-- department or LiveChat's group; the campaign the first UTM campaign). Lists filter by status, owner, platform
-- and creation time, each through its own index over live leads (folded
-- ones are never listed). Values staff set are pinned against
-- `take_incoming`; staff notes are notes with an author; API tokens and
-- sign-in sessions live here so that every instance on a shared database
-- knows them. Building the four indexes reads every lead once.

ALTER TABLE leads ADD COLUMN owner TEXT;
ALTER TABLE leads ADD COLUMN version INTEGER NOT NULL DEFAULT 1;
ALTER TABLE leads ADD COLUMN source TEXT;
ALTER TABLE leads ADD COLUMN source_platform TEXT;
ALTER TABLE leads ADD COLUMN source_channel TEXT;
ALTER TABLE leads ADD COLUMN source_campaign TEXT;
CREATE INDEX leads_status ON leads(status, id) WHERE merged_into IS NULL;
CREATE INDEX leads_owner ON leads(owner, status, id) WHERE merged_into IS NULL;
CREATE INDEX leads_platform ON leads(source_platform, id) WHERE merged_into IS NULL;
CREATE INDEX leads_created ON leads(created_at, id) WHERE merged_into IS NULL;
CREATE INDEX leads_channel ON leads(source_channel, id) WHERE merged_into IS NULL;
CREATE INDEX leads_campaign ON leads(source_campaign, id) WHERE merged_into IS NULL;

CREATE TABLE lead_pins (
    lead_id    INTEGER NOT NULL REFERENCES leads(id),
    field      TEXT NOT NULL,
    pinned_by  TEXT NOT NULL,
    pinned_at  TEXT NOT NULL,
    PRIMARY KEY (lead_id, field)
) WITHOUT ROWID;

ALTER TABLE notes ADD COLUMN author TEXT;

CREATE TABLE api_tokens (
    name          TEXT PRIMARY KEY,
    scope         TEXT NOT NULL CHECK (scope IN ('read', 'write', 'admin')),
    token_hash    TEXT NOT NULL UNIQUE,
    created_at    TEXT NOT NULL,
    last_used_at  TEXT
);

CREATE TABLE sessions (
    id_hash     TEXT PRIMARY KEY,
    user_name   TEXT NOT NULL,
    csrf        TEXT NOT NULL,
    created_at  TEXT NOT NULL,
    seen_at     TEXT NOT NULL
);
CREATE INDEX sessions_user ON sessions(user_name);
