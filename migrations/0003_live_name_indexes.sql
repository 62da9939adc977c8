-- crm-responder schema, version 3: name indexes of live leads only.
--
-- Duplicate detection and name search read the nearest neighbours of a name
-- in leads_name_key and leads_name_rev, of leads not folded into another
-- (merged_into IS NULL). With folded leads in the index, each neighbour cost
-- a seek into the leads table to read merged_into: 24 seeks for every new
-- lead. Indexing live leads only makes the index alone answer (an entry holds
-- the key, merged_into, always NULL, which tells SQLite the index covers the
-- query, and the lead id); folding a lead takes it out of the index.
-- Rebuilding the two indexes reads every lead once (about 10 s for a
-- million leads), at the first start of this version.

DROP INDEX leads_name_key;
DROP INDEX leads_name_rev;
CREATE INDEX leads_name_key ON leads(name_key, merged_into) WHERE name_key IS NOT NULL AND merged_into IS NULL;
CREATE INDEX leads_name_rev ON leads(name_rev, merged_into) WHERE name_rev IS NOT NULL AND merged_into IS NULL;
