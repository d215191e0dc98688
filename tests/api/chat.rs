//! The customer chat end to end over real HTTP: a lead's link token opens its conversation, a
//! message streams a reply over SSE from the Anthropic or OpenAI fake (or the offline scripted
//! provider), usage and cost are stored, failover hides a failing vendor, two tabs see one
//! stream, a reconnect resumes exactly, and a booking lands in the store and at ShopMonkey and
//! stops the cadence.

use std::time::{Duration, Instant};

use leadorch::config::Settings;
use leadorch::config::ai::ProviderKind;
use leadorch::sim::anthropic::{AiFault, AnthropicSim, AnthropicSimConfig};
use leadorch::sim::openai::{OpenAiSim, OpenAiSimConfig};
use leadorch_actors::domain::{Lead, LeadStatus, TouchpointStatus};
use serde_json::{Value, json};

use crate::helpers::{COMPANY, CrmWorld, SECRET_KEY, eventually, spawn_crm_world};

const ANTHROPIC_KEY: &str = "sk-ant-test-key";
const OPENAI_KEY: &str = "sk-openai-test-key";

/// A world with one lead whose first touches went out.
struct Chat {
    world: CrmWorld,
    lead: Lead,
    token: String,
}

async fn chat_world(customer: usize, configure: impl FnOnce(&mut Settings)) -> Chat {
    let world = spawn_crm_world(1, 1, |s| {
        s.poller.enabled = false;
        configure(s);
    })
    .await;
    let sim_customer = world.sim.customer(COMPANY, customer);
    let order = world.sim.create_order(COMPANY, &world.sim_locations[0].id, Some(&sim_customer.id));
    let lead = world.lead_for(&order.id, Duration::from_secs(5)).await.expect("lead");
    let token = token_for(&lead);
    Chat { world, lead, token }
}

fn token_for(lead: &Lead) -> String {
    let links = leadorch::links::LinkSigner::new(
        &secrecy::SecretString::from(SECRET_KEY.to_owned()),
        "http://127.0.0.1:3000",
        jiff::SignedDuration::from_hours(24),
    );
    links.token(lead.tenant_id, lead.id, jiff::Timestamp::now())
}

fn use_anthropic(s: &mut Settings, sim: &AnthropicSim) {
    s.ai.provider_opt = Some(ProviderKind::Anthropic);
    s.ai.fallback = vec![ProviderKind::OpenAi];
    s.ai.anthropic.base_url = sim.base_url();
    s.ai.anthropic.max_retries = 0;
    s.secrets.anthropic_api_key_opt = Some(secrecy::SecretString::from(ANTHROPIC_KEY.to_owned()));
}

fn use_openai(s: &mut Settings, sim: &OpenAiSim) {
    s.ai.openai.base_url = sim.base_url();
    s.ai.openai.max_retries = 0;
    s.secrets.openai_api_key_opt = Some(secrecy::SecretString::from(OPENAI_KEY.to_owned()));
}

impl Chat {
    fn url(&self, suffix: &str) -> String {
        format!("{}/api/chat/{}{suffix}", self.world.app.address, self.lead.id)
    }

    async fn post(&self, body: Value) -> reqwest::Response {
        self.world.app.http.post(self.url("")).bearer_auth(&self.token).json(&body).send().await.expect("sent")
    }

    async fn send(&self, message: &str) -> String {
        let response = self.post(json!({ "message": message })).await;
        assert_eq!(response.status(), 202);
        let body: Value = response.json().await.expect("json");
        body["message_id"].as_str().expect("message id").to_owned()
    }

    async fn stream(&self, last_event_id_opt: Option<&str>) -> SseReader {
        let mut request = self.world.app.http.get(self.url(&format!("/stream?token={}", self.token)));
        if let Some(id) = last_event_id_opt {
            request = request.header("last-event-id", id);
        }
        let response = request.send().await.expect("stream");
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers().get("content-type").and_then(|v| v.to_str().ok()), Some("text/event-stream"));
        SseReader { response, buffer: String::new() }
    }

    async fn history(&self) -> Value {
        let response =
            self.world.app.http.get(self.url("/history")).bearer_auth(&self.token).send().await.expect("sent");
        assert_eq!(response.status(), 200);
        response.json().await.expect("json")
    }
}

/// One server-sent event.
#[derive(Debug, Clone, PartialEq)]
struct Sse {
    id: String,
    event: String,
    data: Value,
}

struct SseReader {
    response: reqwest::Response,
    buffer: String,
}

impl SseReader {
    /// Returns the next event (heartbeat comments skipped), or `None` after 10 s.
    async fn next(&mut self) -> Option<Sse> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let frame: String = self.buffer.drain(..end + 2).collect();
                let (mut id, mut event, mut data) = (String::new(), String::new(), String::new());
                for line in frame.lines() {
                    if let Some(v) = line.strip_prefix("id:") {
                        id = v.trim().to_owned();
                    } else if let Some(v) = line.strip_prefix("event:") {
                        event = v.trim().to_owned();
                    } else if let Some(v) = line.strip_prefix("data:") {
                        data.push_str(v.strip_prefix(' ').unwrap_or(v));
                    }
                }
                if event.is_empty() && data.is_empty() {
                    continue;
                }
                return Some(Sse { id, event, data: serde_json::from_str(&data).unwrap_or(Value::String(data)) });
            }
            let left = deadline.checked_duration_since(Instant::now())?;
            match tokio::time::timeout(left, self.response.chunk()).await {
                Ok(Ok(Some(bytes))) => self.buffer.push_str(&String::from_utf8_lossy(&bytes)),
                _ => return None,
            }
        }
    }

    /// Reads events until a `done` or `error` (inclusive).
    async fn until_end(&mut self) -> Vec<Sse> {
        let mut events = Vec::new();
        while let Some(event) = self.next().await {
            let end = event.event == "done" || event.event == "error";
            events.push(event);
            if end {
                return events;
            }
        }
        panic!("the reply did not end; got {events:?}");
    }
}

fn reply_text(events: &[Sse]) -> String {
    events.iter().filter(|e| e.event == "delta").filter_map(|e| e.data["text"].as_str()).collect()
}

fn assistant_rows(history: &Value) -> Vec<Value> {
    history["messages"].as_array().expect("messages").iter().filter(|m| m["role"] == "assistant").cloned().collect()
}

/// Checks the system prompt carries the location's real catalog prices.
async fn assert_prompt_has_real_prices(chat: &Chat, system: &str) {
    let catalog = chat
        .world
        .app
        .store
        .catalog
        .latest(chat.lead.tenant_id, chat.lead.location_id)
        .await
        .expect("catalog read")
        .expect("the chat fetched the catalog");
    assert!(catalog.items.len() >= 20, "the fake's 23 services");
    for item in &catalog.items {
        let line = format!("- {}: {}", item.name, item.price);
        assert!(system.contains(&line), "the prompt quotes {line:?}");
    }
    assert!(system.contains(&chat.world.locations[0].name));
    assert!(system.contains("Never invent"));
}

#[tokio::test]
async fn an_anthropic_reply_is_relayed_delta_by_delta_and_stored_with_usage_and_cost() {
    let anthropic = AnthropicSim::start(AnthropicSimConfig { api_key: ANTHROPIC_KEY.to_owned() }).await.expect("fake");
    anthropic.set_reply("Ceramic tint for your car is on our price list. Want a time this week?");
    let chat = chat_world(0, |s| use_anthropic(s, &anthropic)).await;
    let mut sse = chat.stream(None).await;

    let message_id = chat.send("How much is ceramic tint?").await;

    let user = sse.next().await.expect("echo");
    assert_eq!((user.event.as_str(), user.data["message_id"].as_str()), ("user", Some(message_id.as_str())));
    let events = sse.until_end().await;
    let deltas = events.iter().filter(|e| e.event == "delta").count();
    assert!(deltas > 3, "streamed delta by delta, got {deltas}");
    assert_eq!(reply_text(&events), "Ceramic tint for your car is on our price list. Want a time this week?");
    let done = events.last().expect("done");
    assert_eq!(done.event, "done");
    assert_eq!(done.data["provider"], "anthropic");
    assert_eq!(done.data["model"], "claude-sonnet-4-5");
    let input = done.data["usage"]["input_tokens"].as_u64().expect("input tokens");
    let output = done.data["usage"]["output_tokens"].as_u64().expect("output tokens");
    assert!(input > 100 && output > 5, "{input} in, {output} out");
    // $3 / $15 per million tokens, rounded up to whole micro-dollars.
    assert_eq!(done.data["cost_micros"].as_u64(), Some((input * 3_000_000 + output * 15_000_000).div_ceil(1_000_000)));

    let history = chat.history().await;
    let stored = &assistant_rows(&history)[0];
    assert_eq!(stored["status"], "complete");
    assert_eq!(stored["provider"], "anthropic");
    assert_eq!(stored["tokens_in"].as_u64(), Some(input));
    assert_eq!(stored["tokens_out"].as_u64(), Some(output));
    assert_eq!(stored["cost_micros"], done.data["cost_micros"]);
    assert!(stored["first_token_ms"].is_u64() && stored["total_ms"].is_u64());

    let requests = anthropic.requests();
    assert_eq!(requests.len(), 1);
    let request = &requests[0];
    assert_eq!(request.header("x-api-key"), Some(ANTHROPIC_KEY));
    assert_eq!(request.header("anthropic-version"), Some("2023-06-01"));
    assert_eq!(request.body["model"], "claude-sonnet-4-5");
    assert_eq!(request.body["stream"], true);
    assert_eq!(request.body["messages"][0]["content"], "How much is ceramic tint?");
    assert_eq!(request.body["metadata"]["user_id"], chat.lead.id.to_string());
    assert_prompt_has_real_prices(&chat, request.body["system"].as_str().expect("system prompt")).await;
    let lead = chat.world.app.store.leads.get(chat.lead.tenant_id, chat.lead.id).await.expect("lead");
    assert_eq!(lead.status, LeadStatus::Replied, "a chat message stops the cadence");
    chat.world.teardown().await;
}

#[tokio::test]
async fn an_openai_compatible_reply_is_relayed_with_usage_from_the_last_chunk() {
    let openai =
        OpenAiSim::start(OpenAiSimConfig { api_key_opt: Some(OPENAI_KEY.to_owned()), include_usage_profile: true })
            .await
            .expect("fake");
    openai.set_reply("We can get your car in tomorrow morning. Shall I hold a time?");
    let chat = chat_world(1, |s| {
        use_openai(s, &openai);
        s.ai.provider_opt = Some(ProviderKind::OpenAi);
        s.ai.openai.model = "gpt-4o-mini".to_owned();
    })
    .await;
    let mut sse = chat.stream(None).await;
    chat.send("Can you fit me in?").await;
    let events = sse.until_end().await;
    assert_eq!(reply_text(&events), "We can get your car in tomorrow morning. Shall I hold a time?");
    let done = events.last().expect("done");
    assert_eq!((done.event.as_str(), done.data["provider"].as_str()), ("done", Some("openai")));
    let (input, output) = (done.data["usage"]["input_tokens"].as_u64(), done.data["usage"]["output_tokens"].as_u64());
    assert!(input.is_some_and(|n| n > 100) && output.is_some_and(|n| n > 5));
    // $0.15 / $0.60 per million tokens.
    let expected = (input.unwrap_or(0) * 150_000 + output.unwrap_or(0) * 600_000).div_ceil(1_000_000);
    assert_eq!(done.data["cost_micros"].as_u64(), Some(expected));

    let request = &openai.requests()[0];
    assert_eq!(request.header("authorization"), Some(format!("Bearer {OPENAI_KEY}").as_str()));
    assert_eq!(request.body["model"], "gpt-4o-mini");
    assert_eq!(request.body["stream"], true);
    assert_eq!(request.body["stream_options"]["include_usage"], true);
    assert_eq!(request.body["messages"][0]["role"], "system");
    assert_eq!(request.body["messages"][1]["content"], "Can you fit me in?");
    assert_prompt_has_real_prices(&chat, request.body["messages"][0]["content"].as_str().expect("system")).await;
    let stored = &assistant_rows(&chat.history().await)[0];
    assert_eq!((stored["provider"].as_str(), stored["model"].as_str()), (Some("openai"), Some("gpt-4o-mini")));
    assert_eq!(stored["cost_micros"].as_u64(), Some(expected));
    chat.world.teardown().await;
}

#[tokio::test]
async fn anthropic_overloaded_before_the_first_token_fails_over_to_openai_and_health_shows_it() {
    let anthropic = AnthropicSim::start(AnthropicSimConfig { api_key: ANTHROPIC_KEY.to_owned() }).await.expect("fake");
    anthropic.set_fault(AiFault::Overloaded529 { times: usize::MAX });
    let openai =
        OpenAiSim::start(OpenAiSimConfig { api_key_opt: Some(OPENAI_KEY.to_owned()), include_usage_profile: true })
            .await
            .expect("fake");
    openai.set_reply("Happy to help with that.");
    let chat = chat_world(2, |s| {
        use_anthropic(s, &anthropic);
        use_openai(s, &openai);
    })
    .await;
    let mut sse = chat.stream(None).await;
    chat.send("Hi there").await;
    let events = sse.until_end().await;
    assert_eq!(reply_text(&events), "Happy to help with that.", "the customer never sees the failure");
    assert!(events.iter().all(|e| e.event != "error"));
    assert_eq!(events.last().map(|e| e.data["provider"].clone()), Some(json!("openai")));
    assert_eq!(anthropic.requests().len(), 1, "tried once (no retries configured), then failed over");

    let health: Value = chat.world.app.get("/api/health").await.json().await.expect("json");
    let providers = health["ai"].as_array().expect("providers");
    let names: Vec<&str> = providers.iter().filter_map(|p| p["name"].as_str()).collect();
    assert_eq!(names, ["anthropic", "openai", "scripted"]);
    assert!(providers[0]["error_rate"].as_f64().is_some_and(|rate| rate > 0.99), "{health}");
    assert!(providers[1]["output_tokens"].as_u64().is_some_and(|n| n > 0), "{health}");
    assert_eq!(providers[1]["error_rate"].as_f64(), Some(0.0));
    assert!(providers[1]["first_token_p50_ms"].is_u64());
    assert!(providers[1]["cost_micros"].as_u64().is_some_and(|n| n > 0));
    assert_eq!(health["database"], "up");
    chat.world.teardown().await;
}

#[tokio::test]
async fn two_tabs_see_the_same_stream_and_a_reconnect_with_last_event_id_resumes_exactly() {
    let chat = chat_world(3, |s| {
        s.ai.scripted_word_delay = Duration::from_millis(40);
    })
    .await;
    let mut tab_a = chat.stream(None).await;
    let mut tab_b = chat.stream(None).await;
    let mut tab_c = chat.stream(None).await;
    chat.send("What are your hours?").await;
    let mut seen_by_c = Vec::new();
    for _ in 0..4 {
        seen_by_c.push(tab_c.next().await.expect("event"));
    }
    drop(tab_c);
    // The reply keeps streaming while tab C is away.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let last_id = seen_by_c.last().expect("seen").id.clone();
    let mut tab_c = chat.stream(Some(&last_id)).await;

    let a = {
        let mut events = vec![tab_a.next().await.expect("user")];
        events.extend(tab_a.until_end().await);
        events
    };
    let b = {
        let mut events = vec![tab_b.next().await.expect("user")];
        events.extend(tab_b.until_end().await);
        events
    };
    assert_eq!(a, b, "two tabs see one stream");
    assert!(reply_text(&a).contains("is open:"), "{}", reply_text(&a));
    let mut c = seen_by_c;
    c.extend(tab_c.until_end().await);
    assert_eq!(c, a, "the reconnected tab missed nothing and saw nothing twice");
    chat.world.teardown().await;
}

#[tokio::test]
async fn a_scripted_booking_conversation_books_at_shopmonkey_and_stops_the_cadence() {
    let chat = chat_world(4, |_| {}).await;
    // The first touches have gone out; later ones are pending.
    let first_touches = eventually(Duration::from_secs(5), || async { !chat.world.app.twilio.sent().is_empty() }).await;
    assert!(first_touches);
    let touches = chat.world.app.store.touchpoints.for_lead(chat.lead.tenant_id, chat.lead.id).await.expect("touches");
    assert!(touches.iter().any(|t| t.status == TouchpointStatus::Pending));

    let mut sse = chat.stream(None).await;
    chat.send("Can I book an appointment?").await;
    let events = sse.until_end().await;
    let done = events.last().expect("done");
    let slots = done.data["slots"].as_array().expect("slots").clone();
    assert_eq!(slots.len(), 3, "three times offered: {done:?}");
    let offer = reply_text(&events);
    for slot in &slots {
        assert!(offer.contains(slot["label"].as_str().expect("label")), "{offer}");
    }
    let sms_before = chat.world.app.twilio.sent().len();

    let slot = &slots[0];
    let response = chat
        .post(json!({ "message": format!("Book {}", slot["label"].as_str().unwrap_or("")), "slot": slot["id"] }))
        .await;
    assert_eq!(response.status(), 202);
    let events = sse.until_end().await;
    let booked = events.iter().find(|e| e.event == "booked").expect("booked event");
    assert_eq!(booked.data["appointment"]["id"], slot["id"]);
    assert!(reply_text(&events).contains("You're booked for"), "{}", reply_text(&events));

    let store = &chat.world.app.store;
    let appointment = store.appointments.of_lead(chat.lead.tenant_id, chat.lead.id).await.expect("read").expect("row");
    assert_eq!(appointment.starts_at.to_string(), slot["id"].as_str().unwrap_or_default());
    let at_crm = chat.world.sim.appointments(COMPANY);
    assert_eq!(at_crm.len(), 1, "one appointment at ShopMonkey");
    assert_eq!(appointment.crm_appointment_id_opt.as_deref(), at_crm[0]["id"].as_str());
    assert_eq!(at_crm[0]["locationId"].as_str(), Some(chat.world.sim_locations[0].id.as_str()));
    let lead = store.leads.get(chat.lead.tenant_id, chat.lead.id).await.expect("lead");
    assert_eq!(lead.status, LeadStatus::Booked);
    let touches = store.touchpoints.for_lead(chat.lead.tenant_id, chat.lead.id).await.expect("touches");
    assert!(touches.iter().all(|t| t.status != TouchpointStatus::Pending), "no touch is left to send");
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(chat.world.app.twilio.sent().len(), sms_before, "no further touches");

    // The same time cannot be booked twice, and the lead is already booked.
    let again = chat.post(json!({ "message": "book it again", "slot": slot["id"] })).await;
    assert_eq!(again.status(), 202);
    let events = sse.until_end().await;
    assert!(events.iter().all(|e| e.event != "booked"));
    assert_eq!(chat.world.sim.appointments(COMPANY).len(), 1);
    chat.world.teardown().await;
}

#[tokio::test]
async fn customer_routes_refuse_bad_tokens_bad_bodies_and_too_many_requests() {
    let chat = chat_world(5, |s| s.ai.rate_limit_per_minute = 8).await;
    let http = &chat.world.app.http;
    let url = chat.url("");
    // No token, a forged one, an expired one.
    assert_eq!(http.post(&url).json(&json!({"message": "hi"})).send().await.expect("sent").status(), 401);
    let mut forged = chat.token.clone().into_bytes();
    let last = forged.len() - 1;
    forged[last] = if forged[last] == b'A' { b'B' } else { b'A' };
    let forged = String::from_utf8(forged).expect("ascii");
    assert_eq!(http.get(chat.url("/history")).bearer_auth(&forged).send().await.expect("sent").status(), 401);
    let links = leadorch::links::LinkSigner::new(
        &secrecy::SecretString::from(SECRET_KEY.to_owned()),
        "http://127.0.0.1:3000",
        jiff::SignedDuration::from_mins(1),
    );
    let expired =
        links.token(chat.lead.tenant_id, chat.lead.id, jiff::Timestamp::now() - jiff::SignedDuration::from_hours(1));
    assert_eq!(http.get(chat.url("/history")).bearer_auth(&expired).send().await.expect("sent").status(), 401);
    // Another lead's valid token opens only that lead's chat.
    let other_customer = chat.world.sim.customer(COMPANY, 0);
    let other_order = chat.world.sim.create_order(COMPANY, &chat.world.sim_locations[0].id, Some(&other_customer.id));
    let other = chat.world.lead_for(&other_order.id, Duration::from_secs(5)).await.expect("lead");
    let other_token = token_for(&other);
    let response = http.get(chat.url("/history")).bearer_auth(&other_token).send().await.expect("sent");
    assert_eq!(response.status(), 403);
    // Bad bodies (each counts against the limit too).
    let post = |body: &'static str| {
        http.post(&url).bearer_auth(&chat.token).header("content-type", "application/json").body(body).send()
    };
    assert_eq!(post("{not json").await.expect("sent").status(), 400);
    assert_eq!(post(r#"{"message": "   "}"#).await.expect("sent").status(), 422);
    assert_eq!(post(r#"{"message": "hi", "slot": "tomorrow"}"#).await.expect("sent").status(), 422);
    let long = json!({ "message": "x".repeat(2_001) });
    assert_eq!(chat.post(long).await.status(), 413);
    // 4 requests so far passed authentication and counted; 4 more are allowed, the next is refused.
    for _ in 0..4 {
        assert_eq!(http.get(chat.url("/history")).bearer_auth(&chat.token).send().await.expect("sent").status(), 200);
    }
    let refused = http.get(chat.url("/history")).bearer_auth(&chat.token).send().await.expect("sent");
    assert_eq!(refused.status(), 429);
    let retry_after: u64 = refused
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .expect("Retry-After");
    assert!((1..=60).contains(&retry_after));
    // Another lead has its own budget.
    assert_eq!(
        http.get(format!("{}/api/chat/{}/history", chat.world.app.address, other.id))
            .bearer_auth(&other_token)
            .send()
            .await
            .expect("sent")
            .status(),
        200
    );
    let history = chat.history_raw(&other_token, other.id).await;
    assert!(history["messages"].as_array().is_some_and(Vec::is_empty), "nothing of another lead leaks");
    chat.world.teardown().await;
}

#[tokio::test]
async fn stop_in_the_chat_opts_the_customer_out_without_asking_the_model() {
    let chat = chat_world(1, |_| {}).await;
    let response = chat.post(json!({ "message": "STOP" })).await;
    assert_eq!(response.status(), 202);
    let lead = chat.world.app.store.leads.get(chat.lead.tenant_id, chat.lead.id).await.expect("lead");
    assert_eq!(lead.status, LeadStatus::OptedOut);
    let phone = lead.phone_opt.as_ref().expect("phone");
    assert!(
        chat.world.app.store.consent.is_opted_out(chat.lead.tenant_id, "sms", phone.as_str()).await.expect("consent")
    );
    let history = chat.history().await;
    let replies = assistant_rows(&history);
    assert_eq!(replies.len(), 1);
    assert!(replies[0]["content"].as_str().is_some_and(|c| c.contains("unsubscribed")));
    chat.world.teardown().await;
}

impl Chat {
    async fn history_raw(&self, token: &str, lead_id: leadorch_actors::domain::LeadId) -> Value {
        let url = format!("{}/api/chat/{}/history", self.world.app.address, lead_id);
        self.world.app.http.get(url).bearer_auth(token).send().await.expect("sent").json().await.expect("json")
    }
}

#[tokio::test]
async fn a_vendor_error_after_the_first_token_ends_the_stream_with_an_error_and_keeps_the_partial_reply() {
    let anthropic = AnthropicSim::start(AnthropicSimConfig { api_key: ANTHROPIC_KEY.to_owned() }).await.expect("fake");
    anthropic.set_reply("Our ceramic tint is popular with Tesla owners and blocks most heat.");
    anthropic.set_fault(AiFault::ErrorMidStream { times: 1 });
    let chat = chat_world(2, |s| use_anthropic(s, &anthropic)).await;
    let mut sse = chat.stream(None).await;
    chat.send("Tell me about ceramic tint").await;
    let events = sse.until_end().await;
    let partial = reply_text(&events);
    assert!(!partial.is_empty(), "some text streamed first");
    let last = events.last().expect("end");
    assert_eq!(last.event, "error");
    assert!(last.data["message"].as_str().is_some_and(|m| !m.is_empty()));
    let stored = &assistant_rows(&chat.history().await)[0];
    assert_eq!(stored["status"], "partial");
    assert_eq!(stored["content"].as_str(), Some(partial.as_str()));
    // The next message is answered normally.
    chat.send("And the price?").await;
    let events = sse.until_end().await;
    assert_eq!(events.last().map(|e| e.event.as_str()), Some("done"));
    chat.world.teardown().await;
}

#[tokio::test]
async fn the_chat_page_and_its_assets_are_served_and_a_revoked_link_stops_working() {
    let chat = chat_world(3, |_| {}).await;
    let http = &chat.world.app.http;
    let address = &chat.world.app.address;
    let page = http.get(format!("{address}/c/{}", chat.token)).send().await.expect("page");
    assert_eq!(page.status(), 200);
    let headers = page.headers().clone();
    assert_eq!(headers.get("content-type").and_then(|v| v.to_str().ok()), Some("text/html; charset=utf-8"));
    assert!(
        headers
            .get("content-security-policy")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|csp| csp.contains("script-src 'self'"))
    );
    assert_eq!(headers.get("referrer-policy").and_then(|v| v.to_str().ok()), Some("no-referrer"));
    let html = page.text().await.expect("html");
    assert!(html.contains(&chat.world.locations[0].name));
    assert!(html.contains(&format!("data-lead-id=\"{}\"", chat.lead.id)));
    let script = html.split("src=\"").nth(1).and_then(|rest| rest.split('"').next()).expect("script url").to_owned();
    let asset = http.get(format!("{address}{script}")).send().await.expect("asset");
    assert_eq!(asset.status(), 200);
    let etag = asset.headers().get("etag").and_then(|v| v.to_str().ok()).expect("etag").to_owned();
    assert!(
        asset.headers().get("cache-control").and_then(|v| v.to_str().ok()).is_some_and(|c| c.contains("immutable"))
    );
    let again = http.get(format!("{address}{script}")).header("if-none-match", &etag).send().await.expect("asset");
    assert_eq!(again.status(), 304, "a cached asset is not sent again");
    assert_eq!(http.get(format!("{address}/assets/nope.js")).send().await.expect("asset").status(), 404);
    // A forged link gets the friendly page, not a stack trace.
    let forged = http.get(format!("{address}/c/not-a-token")).send().await.expect("page");
    assert_eq!(forged.status(), 401);
    assert!(forged.text().await.expect("html").to_lowercase().contains("link"));

    // Staff revoke the lead's links: the page and the API refuse the old token.
    let key = leadorch::ops::add_api_key(&chat.world.app.store, chat.world.tenant.id, "front desk").await.expect("key");
    let revoke_url = format!("{address}/api/leads/{}/revoke-links", chat.lead.id);
    let other_tenant = leadorch::ops::add_tenant(&chat.world.app.store, "Other Co", None).await.expect("tenant");
    let other_key = leadorch::ops::add_api_key(&chat.world.app.store, other_tenant.tenant.id, "x").await.expect("key");
    let foreign = http.post(&revoke_url).bearer_auth(&other_key.key).send().await.expect("sent");
    assert_eq!(foreign.status(), 404, "another tenant cannot revoke this lead's links");
    assert_eq!(chat.history().await["messages"].as_array().map(Vec::len), Some(0));
    let revoked = http.post(&revoke_url).bearer_auth(&key.key).send().await.expect("sent");
    assert_eq!(revoked.status(), 200);
    let api = http.get(chat.url("/history")).bearer_auth(&chat.token).send().await.expect("sent");
    assert_eq!(api.status(), 401);
    let page = http.get(format!("{address}/c/{}", chat.token)).send().await.expect("page");
    assert_eq!(page.status(), 401);
    assert!(page.text().await.expect("html").to_lowercase().contains("link"));
    chat.world.teardown().await;
}

#[tokio::test]
async fn staff_see_their_locations_a_leads_transcript_and_touch_previews_but_not_another_tenants() {
    let chat = chat_world(4, |_| {}).await;
    chat.send("How much is ceramic tint?").await;
    let address = &chat.world.app.address;
    let http = &chat.world.app.http;
    let key = leadorch::ops::add_api_key(&chat.world.app.store, chat.world.tenant.id, "front desk").await.expect("key");
    let transcript_url = format!("{address}/api/leads/{}/chat", chat.lead.id);
    let has_reply = eventually(Duration::from_secs(5), || async {
        let body: Value =
            http.get(&transcript_url).bearer_auth(&key.key).send().await.expect("sent").json().await.expect("json");
        body["messages"]
            .as_array()
            .is_some_and(|m| m.iter().any(|m| m["role"] == "assistant" && m["status"] == "complete"))
    })
    .await;
    assert!(has_reply);
    let locations: Value = http
        .get(format!("{address}/api/locations"))
        .bearer_auth(&key.key)
        .send()
        .await
        .expect("sent")
        .json()
        .await
        .expect("json");
    assert_eq!(locations["locations"][0]["name"], json!(chat.world.locations[0].name));
    let detail: Value = http
        .get(format!("{address}/api/leads/{}", chat.lead.id))
        .bearer_auth(&key.key)
        .send()
        .await
        .expect("sent")
        .json()
        .await
        .expect("json");
    let first_sms = detail["timeline"].as_array().and_then(|t| t.iter().find(|t| t["channel"] == "sms")).expect("sms");
    let preview = first_sms["preview"].as_str().expect("preview");
    let sent = chat.world.app.twilio.sent();
    assert!(sent.iter().any(|m| m.body == preview), "the preview is the SMS as sent: {preview}");

    let other = leadorch::ops::add_tenant(&chat.world.app.store, "Other Co", None).await.expect("tenant");
    let other_key = leadorch::ops::add_api_key(&chat.world.app.store, other.tenant.id, "x").await.expect("key");
    assert_eq!(http.get(&transcript_url).bearer_auth(&other_key.key).send().await.expect("sent").status(), 404);
    let theirs: Value = http
        .get(format!("{address}/api/locations"))
        .bearer_auth(&other_key.key)
        .send()
        .await
        .expect("sent")
        .json()
        .await
        .expect("json");
    assert_eq!(theirs["locations"], json!([]));
    chat.world.teardown().await;
}

/// Every family the operators' dashboards use is on /metrics after one lead was answered and
/// chatted with: actors, supervision, ingress, cadence, catalog, AI, database pool and HTTP.
#[tokio::test]
async fn metrics_name_every_family_the_dashboards_use_after_a_lead_and_a_chat() {
    let sim = AnthropicSim::start(AnthropicSimConfig { api_key: ANTHROPIC_KEY.to_owned() }).await.expect("fake");
    let chat = chat_world(0, |s| use_anthropic(s, &sim)).await;
    let mut stream = chat.stream(None).await;
    chat.send("How much is ceramic tint?").await;
    let events = stream.until_end().await;
    assert_eq!(events.last().map(|e| e.event.as_str()), Some("done"), "{events:?}");

    let response = chat.world.app.get("/metrics").await;
    assert_eq!(response.status(), 200);
    let text = response.text().await.expect("text");
    let has = |family: &str| text.lines().any(|l| l.starts_with(family) && !l.starts_with('#'));
    let families = [
        "leadorch_actors_alive{kind=\"location\"}",
        "leadorch_actors_alive{kind=\"lead\"}",
        "leadorch_actors_alive{kind=\"chat\"}",
        "leadorch_actors_alive{kind=\"ingress\"}",
        "leadorch_actors_alive{kind=\"poller\"}",
        "leadorch_actor_activations_total{kind=\"lead\"}",
        "leadorch_actor_passivations_total{kind=\"lead\"}",
        "leadorch_mailbox_depth{kind=\"ingress\"}",
        "leadorch_actor_message_seconds_bucket{kind=\"lead\"",
        "leadorch_supervisor_restarts_total{kind=\"lead\"}",
        "leadorch_webhooks_total{",
        "leadorch_inbox_lag_seconds",
        "leadorch_speed_to_lead_seconds_bucket",
        "leadorch_touches_total{channel=\"sms\"",
        "leadorch_scheduler_lag_seconds_bucket",
        "leadorch_catalog_reads_total{",
        "leadorch_ai_tokens_total{",
        "leadorch_ai_cost_micros_total{",
        "leadorch_ai_first_token_seconds_bucket{",
        "leadorch_db_pool_connections{state=\"in_use\"}",
        "leadorch_db_pool_waiting",
        "leadorch_http_requests_total{",
    ];
    let missing: Vec<&str> = families.iter().copied().filter(|f| !has(f)).collect();
    assert!(missing.is_empty(), "missing on /metrics: {missing:?}\n{text}");
    assert!(text.contains("# HELP leadorch_speed_to_lead_seconds "), "families are described");
    chat.world.teardown().await;
    sim.shutdown().await;
}
