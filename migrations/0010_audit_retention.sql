-- crm-responder schema, version 10: the audit log, and what retention needs.
--
-- `audit_log` holds who did what, when, from where: sign-ins, lead views,
-- searches, exports, token creation and use, erasures, merges. Rows are
-- only ever added; the one statement that deletes them is the audit
-- retention (`[audit] keep_days`). Read by time, oldest first.
--
-- Retention deletes raw deliveries by the time they were received, and a
-- lead's deliveries with the lead: two indexes on `deliveries` (one
-- appended at its end by each delivery, one written when a delivery is
-- applied to a lead). A lead's folded leads are found by `merged_into`
-- (PostgreSQL has had that index since its first schema). Building the
-- indexes reads every delivery once.

CREATE TABLE audit_log (
    id       INTEGER PRIMARY KEY,
    at       TEXT NOT NULL,
    actor    TEXT NOT NULL,
    action   TEXT NOT NULL,
    target   TEXT,
    address  TEXT
);
CREATE INDEX audit_log_at ON audit_log(at, id);

CREATE INDEX deliveries_received ON deliveries(received_at);
CREATE INDEX deliveries_lead ON deliveries(lead_id, received_at) WHERE lead_id IS NOT NULL;
-- leads_merged_into (which retention also needs) came with 0009.
