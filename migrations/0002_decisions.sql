-- crm-responder schema, version 2: one stored decision per delivery.
--
-- Version 1 copied a delivery's whole identity/merge decision (identifiers,
-- rule, policy, every change) into the explanation of each history row it
-- wrote: eight copies for a new lead. From version 2 the decision is stored
-- once, in `decisions`, and each history row points at it and keeps only its
-- own change in `explanation` ({"change", "change_text"}). Rows written by
-- version 1 are left as they are (decision_id NULL, the whole explanation in
-- the row); readers accept both.

CREATE TABLE decisions (
    id           INTEGER PRIMARY KEY,
    -- {"decision", "summary", "why"} as JSON, long values clipped.
    explanation  TEXT NOT NULL
);

ALTER TABLE history ADD COLUMN decision_id INTEGER REFERENCES decisions(id);
