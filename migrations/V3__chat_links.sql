-- Staff can revoke a lead's chat links: every link issued before this instant stops working
-- (the customer gets a fresh one with the next touch).
ALTER TABLE leads ADD COLUMN links_revoked_at timestamptz;
