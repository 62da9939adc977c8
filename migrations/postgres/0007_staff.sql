-- crm-responder schema for PostgreSQL, version 7: the sales team works its
-- leads. The same change as migrations/0007_staff.sql for SQLite (see there).

ALTER TABLE leads ADD COLUMN owner TEXT COLLATE "C";
ALTER TABLE leads ADD COLUMN version BIGINT NOT NULL DEFAULT 1;
ALTER TABLE leads ADD COLUMN source TEXT COLLATE "C";
ALTER TABLE leads ADD COLUMN source_platform TEXT COLLATE "C";
ALTER TABLE leads ADD COLUMN source_channel TEXT COLLATE "C";
ALTER TABLE leads ADD COLUMN source_campaign TEXT COLLATE "C";
CREATE INDEX leads_status ON leads(status, id) WHERE merged_into IS NULL;
CREATE INDEX leads_owner ON leads(owner, status, id) WHERE merged_into IS NULL;
CREATE INDEX leads_platform ON leads(source_platform, id) WHERE merged_into IS NULL;
CREATE INDEX leads_created ON leads(created_at, id) WHERE merged_into IS NULL;
CREATE INDEX leads_channel ON leads(source_channel, id) WHERE merged_into IS NULL;
CREATE INDEX leads_campaign ON leads(source_campaign, id) WHERE merged_into IS NULL;

CREATE TABLE lead_pins (
    lead_id    BIGINT NOT NULL REFERENCES leads(id),
    field      TEXT COLLATE "C" NOT NULL,
    pinned_by  TEXT COLLATE "C" NOT NULL,
    pinned_at  TEXT COLLATE "C" NOT NULL,
    PRIMARY KEY (lead_id, field)
);

ALTER TABLE notes ADD COLUMN author TEXT COLLATE "C";

CREATE TABLE api_tokens (
    name          TEXT COLLATE "C" PRIMARY KEY,
    scope         TEXT COLLATE "C" NOT NULL CHECK (scope IN ('read', 'write', 'admin')),
    token_hash    TEXT COLLATE "C" NOT NULL UNIQUE,
    created_at    TEXT COLLATE "C" NOT NULL,
    last_used_at  TEXT COLLATE "C"
);

CREATE TABLE sessions (
    id_hash     TEXT COLLATE "C" PRIMARY KEY,
    user_name   TEXT COLLATE "C" NOT NULL,
    csrf        TEXT COLLATE "C" NOT NULL,
    created_at  TEXT COLLATE "C" NOT NULL,
    seen_at     TEXT COLLATE "C" NOT NULL
);
CREATE INDEX sessions_user ON sessions(user_name);
