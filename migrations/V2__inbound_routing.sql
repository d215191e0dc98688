-- Inbound SMS are routed by the number they were sent to: one location per Twilio number.
CREATE UNIQUE INDEX locations_sms_from_key ON locations (sms_from) WHERE sms_from IS NOT NULL;

-- Provider callbacks find their touch by the provider's message id.
CREATE UNIQUE INDEX touchpoints_provider_message_key ON touchpoints (provider_message_id)
    WHERE provider_message_id IS NOT NULL;
DROP INDEX IF EXISTS touchpoints_provider_idx;

-- Leads are looked up by customer in the CRM (appointments booked there).
CREATE INDEX leads_tenant_crm_customer_idx ON leads (tenant_id, crm_customer_id) WHERE crm_customer_id IS NOT NULL;
