-- crm-responder schema: a lead's deliveries indexed by the lead alone.
--
-- 0010 indexed them by `(lead_id, received_at)`. Every applied delivery
-- writes that index (its `UPDATE deliveries SET lead_id`), at a random place:
-- it was most of what a known visitor's delivery cost more after 0010
-- (docs/performance.md, "The second round's features on SQLite"). Keyed by
-- the lead alone (the row id comes with every entry) an entry is a third of
-- the size, so the index is a third of the pages, stays in the page cache
-- longer and its writes cost less; every reader of it still seeks: an
-- unmerge's and a fold's rebuild want a lead's deliveries in id order, which
-- this index gives, and retention's "any delivery since" reads the few rows
-- of an otherwise inactive lead. Building it reads every delivery once.

DROP INDEX deliveries_lead;
CREATE INDEX deliveries_lead ON deliveries(lead_id) WHERE lead_id IS NOT NULL;
