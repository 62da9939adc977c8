-- crm-responder schema, version 6: possible-duplicate links keyed by their
-- newer lead.
--
-- A link is made when its newer lead is created (lead_b, the larger id),
-- to older leads anywhere in the table. Keyed by (lead_a, lead_b), every
-- new link landed at a random place of the whole table (score, reason and
-- all, the largest index of a big database) and each new lead dirtied a
-- page of it per link; a large import rewrote most of the table in every
-- transaction. Keyed by (lead_b, lead_a), a new lead's links are appended
-- side by side, and only the index by the older lead (two integers an
-- entry) takes random inserts. The same pairs, the same lookups (a lead's
-- links are those where it is lead_a, through the index, and those where
-- it is lead_b, through the key). Rebuilding reads every link once (about
-- 10 s for four million).

CREATE TABLE duplicate_links_by_newer (
    lead_a      INTEGER NOT NULL REFERENCES leads(id),
    lead_b      INTEGER NOT NULL REFERENCES leads(id),
    score       REAL NOT NULL,
    reason      TEXT NOT NULL,
    created_at  TEXT NOT NULL,
    PRIMARY KEY (lead_b, lead_a),
    CHECK (lead_a < lead_b)
) WITHOUT ROWID;
INSERT INTO duplicate_links_by_newer (lead_a, lead_b, score, reason, created_at)
    SELECT lead_a, lead_b, score, reason, created_at FROM duplicate_links
    ORDER BY lead_b, lead_a;
DROP TABLE duplicate_links;
ALTER TABLE duplicate_links_by_newer RENAME TO duplicate_links;
CREATE INDEX duplicate_links_a ON duplicate_links(lead_a);
