-- leadorch schema, version 1.
--
-- Every tenant-owned row carries tenant_id, and child rows reference their parent through
-- (tenant_id, id) composite keys, so the database itself refuses a row that points into another
-- tenant. Every table has created_at and updated_at.

CREATE TABLE tenants (
    id              uuid PRIMARY KEY,
    name            text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    -- HMAC secret ShopMonkey signs this tenant's webhooks with.
    webhook_secret  text NOT NULL CHECK (length(webhook_secret) >= 16),
    -- The tenant's ShopMonkey API key, AES-GCM encrypted with LEADORCH_SECRET_KEY (nonce || ciphertext).
    crm_api_key_enc bytea,
    active          boolean NOT NULL DEFAULT true,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE locations (
    id               uuid PRIMARY KEY,
    tenant_id        uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    crm_location_id  text NOT NULL CHECK (length(crm_location_id) BETWEEN 1 AND 200),
    name             text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    address          text,
    phone            text,
    -- IANA time zone name, validated by the application (jiff) before insert.
    timezone         text NOT NULL,
    sms_from         text,
    sms_rate_per_sec double precision NOT NULL DEFAULT 1.0 CHECK (sms_rate_per_sec > 0),
    email_from       text,
    active           boolean NOT NULL DEFAULT true,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    UNIQUE (tenant_id, crm_location_id),
    UNIQUE (tenant_id, id)
);

CREATE TABLE location_hours (
    tenant_id   uuid NOT NULL,
    location_id uuid NOT NULL,
    -- ISO weekday: 1 = Monday .. 7 = Sunday.
    weekday     smallint NOT NULL CHECK (weekday BETWEEN 1 AND 7),
    opens       time NOT NULL,
    closes      time NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (location_id, weekday, opens),
    FOREIGN KEY (tenant_id, location_id) REFERENCES locations (tenant_id, id) ON DELETE CASCADE,
    CHECK (opens < closes)
);

CREATE TABLE service_catalog (
    tenant_id            uuid NOT NULL,
    location_id          uuid NOT NULL,
    crm_service_id       text NOT NULL,
    name                 text NOT NULL,
    price_cents          bigint NOT NULL CHECK (price_cents >= 0),
    -- A staff override beats the CRM price where set.
    override_price_cents bigint CHECK (override_price_cents >= 0),
    bookable             boolean NOT NULL DEFAULT true,
    fetched_at           timestamptz NOT NULL DEFAULT now(),
    created_at           timestamptz NOT NULL DEFAULT now(),
    updated_at           timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (location_id, crm_service_id),
    FOREIGN KEY (tenant_id, location_id) REFERENCES locations (tenant_id, id) ON DELETE CASCADE
);
CREATE INDEX service_catalog_tenant_idx ON service_catalog (tenant_id);

CREATE TABLE leads (
    id                 uuid PRIMARY KEY,
    tenant_id          uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    location_id        uuid NOT NULL,
    crm_source         text NOT NULL,
    crm_order_id       text NOT NULL,
    crm_customer_id    text,
    status             text NOT NULL DEFAULT 'new'
        CHECK (status IN ('new', 'in_cadence', 'replied', 'booked', 'won', 'opted_out', 'closed', 'paused', 'exhausted')),
    first_name         text,
    last_name          text,
    -- E.164, validated by the application.
    phone              text,
    email              text,
    vehicle            jsonb,
    requested_services jsonb NOT NULL DEFAULT '[]'::jsonb,
    cadence_name       text,
    cadence_version    integer,
    -- When the lead reached us (webhook arrival or poll), the start of speed-to-lead.
    received_at        timestamptz NOT NULL,
    first_touch_at     timestamptz,
    created_at         timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now(),
    UNIQUE (tenant_id, crm_source, crm_order_id),
    UNIQUE (tenant_id, id),
    FOREIGN KEY (tenant_id, location_id) REFERENCES locations (tenant_id, id)
);
CREATE INDEX leads_location_status_idx ON leads (location_id, status);
CREATE INDEX leads_tenant_phone_idx ON leads (tenant_id, phone) WHERE phone IS NOT NULL;
CREATE INDEX leads_tenant_email_idx ON leads (tenant_id, email) WHERE email IS NOT NULL;
CREATE INDEX leads_tenant_created_idx ON leads (tenant_id, created_at);

CREATE TABLE touchpoints (
    id                  uuid PRIMARY KEY,
    tenant_id           uuid NOT NULL,
    lead_id             uuid NOT NULL,
    step_index          integer NOT NULL CHECK (step_index >= 0),
    channel             text NOT NULL CHECK (channel IN ('sms', 'email')),
    template            text NOT NULL,
    status              text NOT NULL DEFAULT 'pending'
        CHECK (status IN ('pending', 'sending', 'sent', 'delivered', 'failed', 'cancelled', 'skipped')),
    -- When the cadence step intended the touch, and when the compliance clock placed it.
    intended_at         timestamptz NOT NULL,
    scheduled_at        timestamptz NOT NULL,
    placement_reason    text,
    attempts            integer NOT NULL DEFAULT 0,
    -- Set on claim (pending -> sending); the provider idempotency key of that attempt.
    attempt_id          uuid,
    provider_message_id text,
    provider_status     text,
    last_error          text,
    sent_at             timestamptz,
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now(),
    UNIQUE (lead_id, step_index),
    FOREIGN KEY (tenant_id, lead_id) REFERENCES leads (tenant_id, id) ON DELETE CASCADE
);
CREATE INDEX touchpoints_due_idx ON touchpoints (status, scheduled_at);
CREATE INDEX touchpoints_tenant_idx ON touchpoints (tenant_id);
CREATE INDEX touchpoints_provider_idx ON touchpoints (provider_message_id) WHERE provider_message_id IS NOT NULL;

CREATE TABLE consent (
    tenant_id  uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    channel    text NOT NULL CHECK (channel IN ('sms', 'email', 'chat')),
    -- E.164 phone for sms/chat, lower-cased address for email.
    address    text NOT NULL,
    status     text NOT NULL CHECK (status IN ('opted_out', 'opted_in')),
    source     text NOT NULL,
    reason     text,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, address, channel)
);

CREATE TABLE inbox_events (
    id           bigserial PRIMARY KEY,
    tenant_id    uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    source       text NOT NULL,
    -- The sender's delivery id plus the row version where the sender has one, so a redelivery
    -- of the same change is a duplicate and a later change of the same row is not.
    event_id     text NOT NULL,
    payload      jsonb NOT NULL,
    received_at  timestamptz NOT NULL DEFAULT now(),
    processed_at timestamptz,
    outcome      text,
    attempts     integer NOT NULL DEFAULT 0,
    last_error   text,
    next_attempt_at timestamptz,
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    UNIQUE (tenant_id, source, event_id)
);
CREATE INDEX inbox_events_unprocessed_idx ON inbox_events (received_at) WHERE processed_at IS NULL;

CREATE TABLE job_executions (
    id          bigserial PRIMARY KEY,
    tenant_id   uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    job         text NOT NULL,
    started_at  timestamptz NOT NULL DEFAULT now(),
    finished_at timestamptz,
    -- The poller's high-water mark after this run (e.g. the newest updatedDate seen).
    cursor      text,
    items_seen  integer NOT NULL DEFAULT 0,
    items_new   integer NOT NULL DEFAULT 0,
    error       text,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX job_executions_tenant_job_idx ON job_executions (tenant_id, job, started_at DESC);

CREATE TABLE chat_sessions (
    id               uuid PRIMARY KEY,
    tenant_id        uuid NOT NULL,
    lead_id          uuid NOT NULL,
    status           text NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'closed')),
    last_activity_at timestamptz NOT NULL DEFAULT now(),
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    UNIQUE (tenant_id, id),
    FOREIGN KEY (tenant_id, lead_id) REFERENCES leads (tenant_id, id) ON DELETE CASCADE
);
CREATE INDEX chat_sessions_lead_idx ON chat_sessions (tenant_id, lead_id);

CREATE TABLE chat_messages (
    id                     uuid PRIMARY KEY,
    tenant_id              uuid NOT NULL,
    session_id             uuid NOT NULL,
    lead_id                uuid NOT NULL,
    role                   text NOT NULL CHECK (role IN ('user', 'assistant', 'system', 'staff')),
    content                text NOT NULL,
    status                 text NOT NULL DEFAULT 'complete' CHECK (status IN ('complete', 'partial', 'error')),
    provider               text,
    model                  text,
    tokens_in              integer,
    tokens_out             integer,
    cost_micros            bigint,
    first_token_ms         integer,
    total_ms               integer,
    created_at             timestamptz NOT NULL DEFAULT now(),
    updated_at             timestamptz NOT NULL DEFAULT now(),
    FOREIGN KEY (tenant_id, session_id) REFERENCES chat_sessions (tenant_id, id) ON DELETE CASCADE,
    FOREIGN KEY (tenant_id, lead_id) REFERENCES leads (tenant_id, id) ON DELETE CASCADE
);
CREATE INDEX chat_messages_session_idx ON chat_messages (session_id, created_at);
CREATE INDEX chat_messages_lead_idx ON chat_messages (tenant_id, lead_id, created_at);

CREATE TABLE appointments (
    id                 uuid PRIMARY KEY,
    tenant_id          uuid NOT NULL,
    location_id        uuid NOT NULL,
    lead_id            uuid NOT NULL,
    starts_at          timestamptz NOT NULL,
    ends_at            timestamptz NOT NULL,
    service            text,
    crm_appointment_id text,
    status             text NOT NULL DEFAULT 'booked' CHECK (status IN ('booked', 'cancelled')),
    created_at         timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now(),
    CHECK (starts_at < ends_at),
    FOREIGN KEY (tenant_id, location_id) REFERENCES locations (tenant_id, id),
    FOREIGN KEY (tenant_id, lead_id) REFERENCES leads (tenant_id, id) ON DELETE CASCADE
);
CREATE INDEX appointments_location_time_idx ON appointments (location_id, starts_at);
CREATE INDEX appointments_lead_idx ON appointments (tenant_id, lead_id);

CREATE TABLE api_keys (
    id           uuid PRIMARY KEY,
    tenant_id    uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    name         text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    -- SHA-256 of the key; the key itself is shown once and never stored.
    key_hash     bytea NOT NULL UNIQUE,
    -- First characters of the key, so an operator can tell keys apart.
    key_prefix   text NOT NULL,
    last_used_at timestamptz,
    revoked_at   timestamptz,
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX api_keys_tenant_idx ON api_keys (tenant_id);
