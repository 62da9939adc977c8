-- crm-responder schema, version 12: the review queue of possible
-- duplicates reads its pages through an index.
--
-- The queue (`/duplicates`, `GET /api/duplicates`) lists links strongest
-- first, then by lead ids, a page after a cursor (the last pair shown).
-- Without an index every page read and sorted every link (about 1.8 s a
-- page at four million). In this order a page is a seek: the first page
-- reads its rows off the front, and a cursor page seeks to the cursor
-- (see `store/merges/queue.rs::pairs`). Each new link costs one more index
-- entry (a double and two integers).

CREATE INDEX duplicate_links_queue ON duplicate_links (score DESC, lead_a, lead_b);
