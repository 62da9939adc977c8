-- crm-responder schema for PostgreSQL: what stays of an erased person. The
-- same change as migrations/0009_tombstones.sql for SQLite (see there);
-- leads_merged_into exists here since the first schema.

CREATE TABLE tombstones (
    hash        TEXT COLLATE "C" NOT NULL PRIMARY KEY,
    kind        TEXT COLLATE "C" NOT NULL CHECK (kind IN ('email', 'phone', 'visitor', 'chat')),
    erased_at   TEXT COLLATE "C" NOT NULL,
    key_id      TEXT COLLATE "C" NOT NULL
);
