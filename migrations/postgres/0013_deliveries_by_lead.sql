-- crm-responder schema for PostgreSQL: a lead's deliveries indexed by the
-- lead alone. The same change as migrations/0013_deliveries_by_lead.sql for
-- SQLite (see there).

DROP INDEX deliveries_lead;
CREATE INDEX deliveries_lead ON deliveries(lead_id) WHERE lead_id IS NOT NULL;
