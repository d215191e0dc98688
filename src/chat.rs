//! The chat's adapters: the lead's facts for the prompt (its location's hours, catalog prices
//! and free slots, read fresh for every reply and only ever this lead's), booking (a stored
//! appointment, then the CRM's), the system prompt rendered from `config/prompts/chat.j2`, and
//! the conversation store over `chat_messages`.

use std::sync::Arc;

use jiff::{SignedDuration, Timestamp};
use leadorch_actors::ai::{Grounding, OfferedSlot, PriceLine};
use leadorch_actors::booking::{SlotPolicy, find_bookable, hours_lines, now_label, offer_slots, slot_label};
use leadorch_actors::domain::{LeadId, NewCrmAppointment, TenantId};
use leadorch_actors::ports::{
    BookingError, ChatBackend, ChatStore, Crm, FinishedReply, ReplyEnd, StoreError, StoredChatTurn,
};
use minijinja::Environment;
use uuid::Uuid;

use crate::catalog::CatalogService;
use crate::store::{Appointment, AppointmentRepo, NewAppointment, ReplyRecord, ReplyStatus, Store};

/// The prompt shipped with the binary; `{config_dir}/prompts/chat.j2` replaces it.
pub const DEFAULT_PROMPT: &str = include_str!("../config/prompts/chat.j2");

/// Why the prompt template is unusable.
#[derive(Debug, thiserror::Error)]
#[error("chat prompt template: {0}")]
pub struct PromptError(String);

/// The system prompt template.
#[derive(Debug)]
pub struct Prompt {
    env: Environment<'static>,
}

impl Prompt {
    /// Compiles the template and renders it once with sample facts, so a broken template fails
    /// start-up rather than a customer's chat.
    ///
    /// # Errors
    /// The template does not compile or render.
    pub fn new(source: &str) -> Result<Prompt, PromptError> {
        let mut env = Environment::new();
        env.set_undefined_behavior(minijinja::UndefinedBehavior::Strict);
        env.add_template_owned("chat", source.to_owned()).map_err(|err| PromptError(err.to_string()))?;
        let prompt = Prompt { env };
        prompt.render(&sample()).map_err(PromptError)?;
        Ok(prompt)
    }

    /// Renders the prompt for `grounding`.
    ///
    /// # Errors
    /// The template failed (a fact it names is missing).
    pub fn render(&self, grounding: &Grounding) -> Result<String, String> {
        let template = self.env.get_template("chat").map_err(|err| err.to_string())?;
        let mut context = serde_json::to_value(grounding).map_err(|err| err.to_string())?;
        // Strict mode: optional facts are present as null rather than missing.
        if let Some(map) = context.as_object_mut() {
            for key in ["first_name", "vehicle", "location_phone", "location_address", "appointment", "booking"] {
                map.entry(key).or_insert(serde_json::Value::Null);
            }
        }
        template.render(context).map_err(|err| err.to_string())
    }
}

fn sample() -> Grounding {
    let starts_at = Timestamp::UNIX_EPOCH;
    let slot =
        OfferedSlot { id: starts_at.to_string(), starts_at, ends_at: starts_at, label: "Fri Nov 27, 10:00 AM".into() };
    Grounding {
        first_name_opt: Some("Dana".into()),
        vehicle_opt: Some("2021 Tesla Model 3".into()),
        requested_services: vec!["Ceramic tint".into()],
        location_name: "Tint Co".into(),
        location_phone_opt: Some("+15125550100".into()),
        location_address_opt: Some("1 Main St".into()),
        timezone: "America/Chicago".into(),
        now_label: "Thursday".into(),
        hours: vec!["Monday: 8:00 AM - 6:00 PM".into()],
        prices: vec![PriceLine { name: "Ceramic tint".into(), price_cents: 39_900, price: "$399.00".into() }],
        slots: vec![slot.clone()],
        appointment_opt: Some(slot.clone()),
        booking_opt: Some(leadorch_actors::ai::BookingOutcome::Booked { slot }),
    }
}

/// The lead's facts, booking, and the prompt, over the store, the catalog and the CRM.
#[derive(Debug, Clone)]
pub struct StoreChatBackend {
    store: Store,
    catalog: CatalogService,
    crm: Arc<dyn Crm>,
    prompt: Arc<Prompt>,
    slots: SlotPolicy,
}

impl StoreChatBackend {
    /// Creates the backend.
    pub fn new(
        store: Store,
        catalog: CatalogService,
        crm: Arc<dyn Crm>,
        prompt: Arc<Prompt>,
        slots: SlotPolicy,
    ) -> Self {
        StoreChatBackend { store, catalog, crm, prompt, slots }
    }

    fn horizon_end(&self, now: Timestamp) -> Timestamp {
        now.saturating_add(SignedDuration::from_hours(24 * i64::from(self.slots.horizon_days + 1))).unwrap_or(now)
    }
}

fn as_slot(appointment: &Appointment, tz: &jiff::tz::TimeZone) -> OfferedSlot {
    OfferedSlot {
        id: appointment.starts_at.to_string(),
        starts_at: appointment.starts_at,
        ends_at: appointment.ends_at,
        label: slot_label(appointment.starts_at, tz),
    }
}

#[async_trait::async_trait]
impl ChatBackend for StoreChatBackend {
    async fn grounding(&self, tenant_id: TenantId, lead_id: LeadId, now: Timestamp) -> Result<Grounding, StoreError> {
        let lead = self.store.leads.get(tenant_id, lead_id).await?;
        let location = self.store.locations.get(tenant_id, lead.location_id).await?;
        let hours = self.store.locations.hours(tenant_id, location.id).await?;
        let tz = location.timezone.to_time_zone();
        let booked = self.store.appointments.booked_between(tenant_id, location.id, now, self.horizon_end(now)).await?;
        let appointment_opt = self.store.appointments.of_lead(tenant_id, lead_id).await?;
        // Prices are grounding, not a precondition: without them the prompt says to quote nothing.
        let prices = match self.catalog.get(tenant_id, location.id).await {
            Ok(read) => read
                .catalog
                .items
                .iter()
                .map(|item| PriceLine {
                    name: item.name.clone(),
                    price_cents: item.price.cents(),
                    price: item.price.to_string(),
                })
                .collect(),
            Err(err) => {
                tracing::warn!(%tenant_id, location_id = %location.id, error = %err, "catalog unavailable for chat");
                Vec::new()
            }
        };
        let slots =
            if appointment_opt.is_some() { Vec::new() } else { offer_slots(&hours, &tz, now, &booked, &self.slots) };
        Ok(Grounding {
            first_name_opt: lead.first_name_opt.clone(),
            vehicle_opt: lead.vehicle_opt.as_ref().and_then(|v| v.describe()),
            requested_services: lead.requested_services.clone(),
            location_name: location.name.clone(),
            location_phone_opt: location.phone_opt.as_ref().map(|p| p.as_str().to_owned()),
            location_address_opt: location.address_opt.clone(),
            timezone: location.timezone.as_str().to_owned(),
            now_label: now_label(now, &tz),
            hours: hours_lines(&hours),
            prices,
            slots,
            appointment_opt: appointment_opt.as_ref().map(|a| as_slot(a, &tz)),
            booking_opt: None,
        })
    }

    async fn book(
        &self,
        tenant_id: TenantId,
        lead_id: LeadId,
        starts_at: Timestamp,
        now: Timestamp,
    ) -> Result<OfferedSlot, BookingError> {
        let failed = |err: StoreError| BookingError::Failed(err.to_string());
        let lead = self.store.leads.get(tenant_id, lead_id).await.map_err(failed)?;
        let location = self.store.locations.get(tenant_id, lead.location_id).await.map_err(failed)?;
        let hours = self.store.locations.hours(tenant_id, location.id).await.map_err(failed)?;
        let tz = location.timezone.to_time_zone();
        let booked = self
            .store
            .appointments
            .booked_between(tenant_id, location.id, now, self.horizon_end(now))
            .await
            .map_err(failed)?;
        let slot = find_bookable(&hours, &tz, now, &booked, &self.slots, starts_at).ok_or(BookingError::Unavailable)?;
        let service_opt = lead.requested_services.first().cloned();
        let new = NewAppointment {
            location_id: location.id,
            lead_id,
            starts_at: slot.starts_at,
            ends_at: slot.ends_at,
            service_opt: service_opt.clone(),
        };
        let appointment = match self.store.appointments.book(tenant_id, &new).await {
            Ok(appointment) => appointment,
            Err(StoreError::Conflict { constraint }) if constraint == AppointmentRepo::LEAD_ALREADY_BOOKED => {
                return Err(BookingError::AlreadyBooked);
            }
            Err(StoreError::Conflict { .. }) => return Err(BookingError::Unavailable),
            Err(err) => return Err(failed(err)),
        };
        let name = match (&lead.first_name_opt, lead.vehicle_opt.as_ref().and_then(|v| v.describe())) {
            (Some(first), Some(vehicle)) => format!("{first} - {vehicle}"),
            (Some(first), None) => first.clone(),
            (None, Some(vehicle)) => vehicle,
            (None, None) => "Customer booked by chat".to_owned(),
        };
        let crm_appointment = NewCrmAppointment {
            location_id: location.crm_location_id.clone(),
            customer_id_opt: lead.crm_customer_id_opt.clone(),
            vehicle_id_opt: None,
            order_id_opt: Some(lead.crm_order_id.clone()),
            name,
            note_opt: Some(format!(
                "Booked by the leadorch chat{}",
                service_opt.map(|s| format!(": {s}")).unwrap_or_default()
            )),
            start: slot.starts_at,
            end: slot.ends_at,
        };
        // The customer has the slot once it is stored; a CRM failure is logged and counted for
        // staff to enter by hand, never shown to the customer as a failed booking.
        match self.crm.create_appointment(tenant_id, &crm_appointment).await {
            Ok(created) => {
                if let Err(err) = self.store.appointments.set_crm_id(tenant_id, appointment.id, &created.id).await {
                    tracing::warn!(%tenant_id, appointment_id = %appointment.id, error = %err, "crm appointment id not stored");
                }
                metrics::counter!("leadorch_appointments_total", "crm" => "created").increment(1);
            }
            Err(err) => {
                tracing::error!(%tenant_id, appointment_id = %appointment.id, error = %err, "crm appointment not created");
                metrics::counter!("leadorch_appointments_total", "crm" => "failed").increment(1);
            }
        }
        Ok(as_slot(&appointment, &tz))
    }

    fn render_system(&self, grounding: &Grounding) -> Result<String, String> {
        self.prompt.render(grounding)
    }
}

/// The conversation store over `chat_messages`.
#[derive(Debug, Clone)]
pub struct StoreChat {
    store: Store,
}

impl StoreChat {
    pub fn new(store: Store) -> Self {
        StoreChat { store }
    }
}

#[async_trait::async_trait]
impl ChatStore for StoreChat {
    async fn history(&self, tenant_id: TenantId, lead_id: LeadId) -> Result<Vec<StoredChatTurn>, StoreError> {
        let messages = self.store.chat.history(tenant_id, lead_id).await?;
        Ok(messages
            .into_iter()
            .map(|m| StoredChatTurn { id: m.id, role: m.role, content: m.content, status: m.status })
            .collect())
    }

    async fn record_customer_message(
        &self,
        tenant_id: TenantId,
        lead_id: LeadId,
        text: &str,
    ) -> Result<Uuid, StoreError> {
        Ok(self.store.chat.append_customer_message(tenant_id, lead_id, text).await?.id)
    }

    async fn start_reply(&self, tenant_id: TenantId, lead_id: LeadId) -> Result<Uuid, StoreError> {
        self.store.chat.start_reply(tenant_id, lead_id).await
    }

    async fn finish_reply(
        &self,
        tenant_id: TenantId,
        message_id: Uuid,
        reply: &FinishedReply,
    ) -> Result<(), StoreError> {
        let record = ReplyRecord {
            content: reply.content.clone(),
            status: match reply.end {
                ReplyEnd::Complete => ReplyStatus::Complete,
                ReplyEnd::Partial => ReplyStatus::Partial,
                ReplyEnd::Error => ReplyStatus::Error,
            },
            provider_opt: reply.provider_opt.clone(),
            model_opt: reply.model_opt.clone(),
            tokens_in: reply.usage.input_tokens,
            tokens_out: reply.usage.output_tokens,
            cost_micros: reply.cost_micros,
            first_token_ms_opt: reply.first_token_ms_opt,
            total_ms: reply.total_ms,
        };
        self.store.chat.finish_reply(tenant_id, message_id, &record).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_prompt_names_the_prices_slots_hours_and_rules() {
        let prompt = Prompt::new(DEFAULT_PROMPT).expect("prompt compiles");
        let text = prompt.render(&sample()).expect("renders");
        for expected in [
            "Tint Co",
            "Ceramic tint: $399.00",
            "Fri Nov 27, 10:00 AM",
            "Monday: 8:00 AM - 6:00 PM",
            "Dana",
            "2021 Tesla Model 3",
            "Never invent",
        ] {
            assert!(text.contains(expected), "missing {expected:?} in:\n{text}");
        }
    }

    #[test]
    fn without_prices_the_prompt_forbids_quoting() {
        let prompt = Prompt::new(DEFAULT_PROMPT).expect("prompt compiles");
        let mut grounding = sample();
        grounding.prices.clear();
        grounding.first_name_opt = None;
        grounding.booking_opt = None;
        let text = prompt.render(&grounding).expect("renders");
        assert!(text.contains("do not quote any amount"));
        assert!(!text.contains('$'));
    }

    #[test]
    fn a_broken_template_fails_at_start_up() {
        assert!(Prompt::new("{% for x in %}").is_err());
        assert!(Prompt::new("{{ no_such_fact.field }}").is_err());
    }
}
