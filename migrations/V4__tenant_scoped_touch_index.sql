-- Every touchpoint query is scoped by tenant and most name the lead too. The old index on
-- tenant_id alone tied, in the planner's estimates, with the (lead_id, step_index) key
-- whenever statistics were missing (a new table, autovacuum off), and then won: each lookup
-- of one lead's touches walked the whole tenant. One index on (tenant_id, lead_id, step_index)
-- matches those queries fully and still serves tenant-wide scans and cascades.
DROP INDEX IF EXISTS touchpoints_tenant_idx;
CREATE INDEX touchpoints_tenant_lead_idx ON touchpoints (tenant_id, lead_id, step_index);
