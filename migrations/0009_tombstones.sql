-- crm-responder schema: what stays of an erased person.
--
-- `crm-responder erase` removes a person's leads, contacts, conversations,
-- notes, history and raw deliveries, and leaves one row per identifier they
-- had (email, phone, platform visitor id, platform chat id): its keyed hash,
-- HMAC-SHA256 under `[privacy] secret`, never the value, and when it was
-- erased. `replay`, `import` and `migrate-store` skip data received before
-- that time which carries such an identifier; live deliveries are not
-- checked (a person who writes again is a new lead). `key_id` names the
-- secret, so that tombstones made with another one are noticed, not missed.
-- Erasing finds a person's folded leads by `merged_into`, which no SQLite
-- index covered (PostgreSQL has had one from its first schema).

CREATE TABLE tombstones (
    hash        TEXT NOT NULL PRIMARY KEY,
    kind        TEXT NOT NULL CHECK (kind IN ('email', 'phone', 'visitor', 'chat')),
    erased_at   TEXT NOT NULL,
    key_id      TEXT NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS leads_merged_into ON leads(merged_into) WHERE merged_into IS NOT NULL;
