-- crm-responder schema, version 8: merges that can be undone, and pairs
-- staff said are not the same person.
--
-- Every merge (staff's, or an anonymous visitor folded by a delivery) is a
-- row of `merges`, written in the merge's own transaction: the absorbed
-- lead as it was (`snapshot`: its fields, custom fields, tags, pins and
-- possible-duplicate links, and the survivor's values the merge replaced),
-- exactly which rows moved (`moved`: emails, phones, visitor ids,
-- conversation and note ids, custom fields, tags, links), and the highest
-- ids of deliveries, conversations, notes, emails and phones at that moment
-- (`marks`), so that an unmerge can tell what arrived afterwards. An undone
-- merge keeps its row (`undone_at`): the pair is never folded again by a
-- delivery, only flagged. Folds made before this version have no row;
-- unmerge rebuilds what it can for them from the raw deliveries.
--
-- `dismissed_duplicates` holds the pairs staff dismissed ("not the same
-- person"): no webhook, import or replay links them again.

CREATE TABLE merges (
    id           INTEGER PRIMARY KEY,
    survivor     INTEGER NOT NULL REFERENCES leads(id),
    absorbed     INTEGER NOT NULL REFERENCES leads(id),
    kind         TEXT NOT NULL CHECK (kind IN ('merge', 'fold')),
    merged_at    TEXT NOT NULL,
    merged_by    TEXT NOT NULL,
    delivery_id  INTEGER REFERENCES deliveries(id),
    snapshot     TEXT NOT NULL,
    moved        TEXT NOT NULL,
    marks        TEXT NOT NULL,
    undone_at    TEXT,
    undone_by    TEXT
);
CREATE INDEX merges_absorbed ON merges(absorbed, id);
CREATE INDEX merges_survivor ON merges(survivor, id);

CREATE TABLE dismissed_duplicates (
    lead_a        INTEGER NOT NULL REFERENCES leads(id),
    lead_b        INTEGER NOT NULL REFERENCES leads(id),
    dismissed_by  TEXT NOT NULL,
    dismissed_at  TEXT NOT NULL,
    PRIMARY KEY (lead_a, lead_b),
    CHECK (lead_a < lead_b)
) WITHOUT ROWID;
