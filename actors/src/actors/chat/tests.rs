use std::sync::Mutex;

use tokio::sync::{Semaphore, mpsc};

use super::*;
use crate::ai::{AiProvider, PriceLine};
use crate::ai_router::{BreakerPolicy, ModelPrice};
use crate::ports::{StoredChatTurn, SystemClock};

/// A conversation store in memory.
#[derive(Debug, Default)]
struct MemoryChat {
    messages: Mutex<Vec<(StoredChatTurn, Option<FinishedReply>)>>,
    replied: Mutex<bool>,
}

impl MemoryChat {
    fn rows(&self) -> Vec<(StoredChatTurn, Option<FinishedReply>)> {
        self.messages.lock().expect("lock").clone()
    }
}

#[async_trait::async_trait]
impl ChatStore for MemoryChat {
    async fn history(&self, _tenant_id: TenantId, _lead_id: LeadId) -> Result<Vec<StoredChatTurn>, StoreError> {
        Ok(self.rows().into_iter().map(|(turn, _)| turn).collect())
    }

    async fn record_customer_message(&self, _t: TenantId, _l: LeadId, text: &str) -> Result<Uuid, StoreError> {
        let id = Uuid::now_v7();
        *self.replied.lock().expect("lock") = true;
        let turn = StoredChatTurn { id, role: "user".into(), content: text.into(), status: "complete".into() };
        self.messages.lock().expect("lock").push((turn, None));
        Ok(id)
    }

    async fn start_reply(&self, _t: TenantId, _l: LeadId) -> Result<Uuid, StoreError> {
        let id = Uuid::now_v7();
        let turn = StoredChatTurn { id, role: "assistant".into(), content: String::new(), status: "partial".into() };
        self.messages.lock().expect("lock").push((turn, None));
        Ok(id)
    }

    async fn finish_reply(&self, _t: TenantId, id: Uuid, reply: &FinishedReply) -> Result<(), StoreError> {
        let mut messages = self.messages.lock().expect("lock");
        let row = messages.iter_mut().find(|(turn, _)| turn.id == id).ok_or(StoreError::NotFound)?;
        row.0.content = reply.content.clone();
        row.0.status = match reply.end {
            ReplyEnd::Complete => "complete",
            ReplyEnd::Partial => "partial",
            ReplyEnd::Error => "error",
        }
        .into();
        row.1 = Some(reply.clone());
        Ok(())
    }
}

fn slot(id: &str, label: &str) -> OfferedSlot {
    let starts_at: Timestamp = id.parse().expect("ts");
    OfferedSlot {
        id: id.into(),
        starts_at,
        ends_at: starts_at.checked_add(jiff::SignedDuration::from_hours(1)).expect("add"),
        label: label.into(),
    }
}

/// Facts and bookings in memory.
#[derive(Debug, Default)]
struct MemoryBackend {
    booked: Mutex<Option<OfferedSlot>>,
}

#[async_trait::async_trait]
impl ChatBackend for MemoryBackend {
    async fn grounding(&self, _t: TenantId, _l: LeadId, _now: Timestamp) -> Result<Grounding, StoreError> {
        let booked = self.booked.lock().expect("lock").clone();
        let slots =
            [slot("2026-11-27T16:00:00Z", "Fri Nov 27, 10:00 AM"), slot("2026-11-28T15:00:00Z", "Sat Nov 28, 9:00 AM")]
                .into_iter()
                .filter(|s| booked.as_ref().is_none_or(|b| b.id != s.id))
                .collect();
        Ok(Grounding {
            first_name_opt: Some("Dana".into()),
            vehicle_opt: Some("2021 Tesla Model 3".into()),
            requested_services: vec![],
            location_name: "Tint Co Austin".into(),
            location_phone_opt: None,
            location_address_opt: None,
            timezone: "America/Chicago".into(),
            now_label: "Thursday".into(),
            hours: vec![],
            prices: vec![PriceLine { name: "Ceramic".into(), price_cents: 39_900, price: "$399.00".into() }],
            slots,
            appointment_opt: booked,
            booking_opt: None,
        })
    }

    async fn book(
        &self,
        t: TenantId,
        l: LeadId,
        starts_at: Timestamp,
        now: Timestamp,
    ) -> Result<OfferedSlot, BookingError> {
        let grounding = self.grounding(t, l, now).await.map_err(|e| BookingError::Failed(e.to_string()))?;
        let slot = grounding.slots.into_iter().find(|s| s.starts_at == starts_at).ok_or(BookingError::Unavailable)?;
        *self.booked.lock().expect("lock") = Some(slot.clone());
        Ok(slot)
    }

    fn render_system(&self, grounding: &Grounding) -> Result<String, String> {
        Ok(format!("You help {} customers.", grounding.location_name))
    }
}

/// A provider that streams `words` one delta each, each delta waiting for a permit when gated,
/// and records the requests it got.
#[derive(Debug)]
struct Gated {
    words: Vec<String>,
    gate_opt: Option<Arc<Semaphore>>,
    break_after_opt: Option<usize>,
    requests: Mutex<Vec<ChatRequest>>,
}

impl Gated {
    fn new(reply: &str, gate_opt: Option<Arc<Semaphore>>) -> Arc<Gated> {
        Arc::new(Gated {
            words: reply.split_inclusive(' ').map(str::to_owned).collect(),
            gate_opt,
            break_after_opt: None,
            requests: Mutex::default(),
        })
    }
}

#[async_trait::async_trait]
impl AiProvider for Gated {
    fn name(&self) -> &str {
        "gated"
    }

    fn model(&self) -> &str {
        "gated-1"
    }

    async fn stream(&self, request: &ChatRequest) -> Result<mpsc::Receiver<Result<StreamEvent, AiError>>, AiError> {
        self.requests.lock().expect("lock").push(request.clone());
        let (tx, rx) = mpsc::channel(8);
        let words = self.words.clone();
        let gate_opt = self.gate_opt.clone();
        let break_after_opt = self.break_after_opt;
        tokio::spawn(async move {
            for (i, word) in words.iter().enumerate() {
                if break_after_opt == Some(i) {
                    let _ = tx.send(Err(AiError::Stream("overloaded_error".into()))).await;
                    return;
                }
                if let Some(gate) = &gate_opt {
                    let Ok(permit) = gate.acquire().await else { return };
                    permit.forget();
                }
                if tx.send(Ok(StreamEvent::Delta(word.clone()))).await.is_err() {
                    return;
                }
            }
            let output = u32::try_from(words.len()).unwrap_or(0);
            let _ = tx.send(Ok(StreamEvent::Done(Usage { input_tokens: 1_000, output_tokens: output }))).await;
        });
        Ok(rx)
    }
}

struct World {
    hub: ChatHub,
    chat: Arc<MemoryChat>,
    backend: Arc<MemoryBackend>,
    tenant: TenantId,
    lead: LeadId,
    location: LocationId,
}

fn world(provider: Arc<dyn AiProvider>, policy: ChatPolicy) -> World {
    let chat = Arc::new(MemoryChat::default());
    let backend = Arc::new(MemoryBackend::default());
    let price = ModelPrice { input_per_mtok_micros: 3_000_000, output_per_mtok_micros: 15_000_000 };
    let deps = Arc::new(ChatDeps {
        store: chat.clone(),
        backend: backend.clone(),
        router: ProviderRouter::new(vec![(provider, price)], BreakerPolicy::default()),
        clock: Arc::new(SystemClock),
        policy,
    });
    World {
        hub: ChatHub::new(deps, LocationRegistry::default()),
        chat,
        backend,
        tenant: TenantId::new(),
        lead: LeadId::new(),
        location: LocationId::new(),
    }
}

impl World {
    async fn send(&self, text: &str) -> Uuid {
        let message = CustomerMessage { text: text.into(), slot_opt: None };
        self.hub.send(self.tenant, self.lead, self.location, message).await.expect("send")
    }

    async fn subscribe(&self, after_opt: Option<&str>) -> Subscription {
        self.hub
            .subscribe(self.tenant, self.lead, self.location, after_opt.map(str::to_owned))
            .await
            .expect("subscribe")
    }
}

/// Reads events until a `done` or `error`.
async fn until_done(live: &mut broadcast::Receiver<ChatEvent>) -> Vec<ChatEvent> {
    let mut events = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            let event = live.recv().await.expect("event");
            let end = matches!(event.kind, ChatEventKind::Done { .. } | ChatEventKind::Error { .. });
            events.push(event);
            if end {
                break;
            }
        }
    })
    .await
    .expect("a reply ends within 5 s");
    events
}

fn text_of(events: &[ChatEvent]) -> String {
    events
        .iter()
        .filter_map(|e| match &e.kind {
            ChatEventKind::Delta { text, .. } => Some(text.as_str()),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn two_subscribers_see_the_same_events_and_a_reconnect_resumes_without_gaps_or_repeats() {
    let gate = Arc::new(Semaphore::new(0));
    let w = world(Gated::new("one two three four five six", Some(gate.clone())), ChatPolicy::default());
    let mut a = w.subscribe(None).await;
    let mut b = w.subscribe(None).await;
    let mut c = w.subscribe(None).await;
    w.send("hello").await;
    gate.add_permits(2);
    // Subscriber C reads the user echo and two deltas, then "disconnects".
    let mut seen_by_c = Vec::new();
    for _ in 0..3 {
        seen_by_c
            .push(tokio::time::timeout(Duration::from_secs(5), c.live.recv()).await.expect("in time").expect("event"));
    }
    drop(c);
    let last_id = seen_by_c.last().expect("event").id.clone();
    gate.add_permits(2);
    tokio::time::sleep(Duration::from_millis(50)).await;
    // C comes back while the reply is still streaming, naming the last event it saw.
    let mut c2 = w.subscribe(Some(&last_id)).await;
    assert!(!c2.reset);
    gate.add_permits(10);
    let events_a = until_done(&mut a.live).await;
    let events_b = until_done(&mut b.live).await;
    assert_eq!(events_a, events_b, "two tabs see one stream");
    assert_eq!(text_of(&events_a), "one two three four five six");
    let mut resumed = c2.backlog.clone();
    if !matches!(resumed.last().map(|e| &e.kind), Some(ChatEventKind::Done { .. })) {
        resumed.extend(until_done(&mut c2.live).await);
    }
    let mut rejoined = seen_by_c;
    rejoined.extend(resumed);
    assert_eq!(rejoined, events_a, "the reconnected subscriber missed nothing and saw nothing twice");
    let ids: Vec<&str> = events_a.iter().map(|e| e.id.as_str()).collect();
    let mut unique = ids.clone();
    unique.dedup();
    assert_eq!(ids, unique);
}

#[tokio::test]
async fn an_id_from_another_incarnation_asks_the_page_to_reload_the_history() {
    let w = world(Gated::new("hi", None), ChatPolicy::default());
    let subscription = w.subscribe(Some("deadbeef-12")).await;
    assert!(subscription.reset);
    let fresh = w.subscribe(None).await;
    assert!(!fresh.reset);
}

#[tokio::test]
async fn messages_sent_during_a_reply_wait_for_it_and_are_answered_next_in_order() {
    let gate = Arc::new(Semaphore::new(0));
    let provider = Gated::new("sure thing", Some(gate.clone()));
    let w = world(provider.clone(), ChatPolicy::default());
    let mut sub = w.subscribe(None).await;
    w.send("first").await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    w.send("second").await;
    w.send("third").await;
    gate.add_permits(100);
    until_done(&mut sub.live).await;
    until_done(&mut sub.live).await;
    let requests = provider.requests.lock().expect("lock").clone();
    assert_eq!(requests.len(), 2, "one reply at a time; the waiting messages are answered together");
    let contents: Vec<(ChatRole, String)> = requests[1].turns.iter().map(|t| (t.role, t.content.clone())).collect();
    assert_eq!(
        contents,
        [
            (ChatRole::User, "first".to_owned()),
            (ChatRole::Assistant, "sure thing".to_owned()),
            (ChatRole::User, "second\n\nthird".to_owned())
        ]
    );
    assert_eq!(requests[1].grounding_opt.as_ref().map(|g| g.location_name.as_str()), Some("Tint Co Austin"));
}

#[tokio::test]
async fn a_reply_whose_subscribers_left_completes_and_is_stored_with_its_cost() {
    let gate = Arc::new(Semaphore::new(0));
    let w = world(Gated::new("a full answer", Some(gate.clone())), ChatPolicy::default());
    let sub = w.subscribe(None).await;
    w.send("price?").await;
    drop(sub);
    gate.add_permits(10);
    let stored = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            if let Some((turn, Some(reply))) =
                w.chat.rows().into_iter().find(|(t, r)| t.role == "assistant" && r.is_some())
            {
                return (turn, reply);
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("stored");
    assert_eq!(stored.0.content, "a full answer");
    assert_eq!(stored.1.end, ReplyEnd::Complete);
    assert_eq!(stored.1.provider_opt.as_deref(), Some("gated"));
    assert_eq!(stored.1.usage, Usage { input_tokens: 1_000, output_tokens: 3 });
    // 1000 * $3/M + 3 * $15/M = 3000 + 45 micro-dollars.
    assert_eq!(stored.1.cost_micros, 3_045);
    assert!(stored.1.first_token_ms_opt.is_some());
}

#[tokio::test]
async fn a_stream_that_breaks_after_the_first_token_ends_with_an_error_and_keeps_the_partial_text() {
    let provider = Arc::new(Gated {
        words: vec!["half ".into(), "an ".into(), "answer".into()],
        gate_opt: None,
        break_after_opt: Some(2),
        requests: Mutex::default(),
    });
    let w = world(provider, ChatPolicy::default());
    let mut sub = w.subscribe(None).await;
    w.send("hi").await;
    let events = until_done(&mut sub.live).await;
    assert!(matches!(events.last().map(|e| &e.kind), Some(ChatEventKind::Error { message_id_opt: Some(_), .. })));
    let rows = w.chat.rows();
    let (turn, reply) = rows.iter().find(|(t, _)| t.role == "assistant").expect("reply row");
    assert_eq!(turn.content, "half an ");
    assert_eq!(reply.as_ref().map(|r| r.end), Some(ReplyEnd::Partial));
}

#[tokio::test]
async fn an_idle_session_stops_and_the_next_one_rebuilds_from_the_store() {
    let policy = ChatPolicy { idle_after: Duration::from_millis(100), ..ChatPolicy::default() };
    let provider = Gated::new("noted", None);
    let w = world(provider.clone(), policy);
    let mut sub = w.subscribe(None).await;
    w.send("remember my Tesla").await;
    until_done(&mut sub.live).await;
    drop(sub);
    tokio::time::timeout(Duration::from_secs(5), async {
        while w.hub.live_sessions() > 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the idle session stops");
    let mut sub = w.subscribe(None).await;
    w.send("and?").await;
    until_done(&mut sub.live).await;
    let requests = provider.requests.lock().expect("lock").clone();
    let turns: Vec<&str> = requests[1].turns.iter().map(|t| t.content.as_str()).collect();
    assert_eq!(turns, ["remember my Tesla", "noted", "and?"]);
}

#[tokio::test]
async fn picking_an_offered_slot_books_it_and_announces_the_booking() {
    let w = world(Gated::new("done", None), ChatPolicy::default());
    let mut sub = w.subscribe(None).await;
    w.send("yes, Fri Nov 27, 10:00 AM works").await;
    let events = until_done(&mut sub.live).await;
    let booked: Vec<&OfferedSlot> = events
        .iter()
        .filter_map(|e| match &e.kind {
            ChatEventKind::Booked { appointment } => Some(appointment),
            _ => None,
        })
        .collect();
    assert_eq!(booked.len(), 1);
    assert_eq!(booked[0].label, "Fri Nov 27, 10:00 AM");
    assert!(w.backend.booked.lock().expect("lock").is_some());
}

#[test]
fn a_label_without_a_confirming_word_or_naming_two_slots_books_nothing() {
    let grounding = Grounding {
        first_name_opt: None,
        vehicle_opt: None,
        requested_services: vec![],
        location_name: "x".into(),
        location_phone_opt: None,
        location_address_opt: None,
        timezone: "UTC".into(),
        now_label: String::new(),
        hours: vec![],
        prices: vec![],
        slots: vec![
            slot("2026-11-27T16:00:00Z", "Fri Nov 27, 10:00 AM"),
            slot("2026-11-28T15:00:00Z", "Sat Nov 28, 9:00 AM"),
        ],
        appointment_opt: None,
        booking_opt: None,
    };
    let message = |text: &str| vec![CustomerMessage { text: text.into(), slot_opt: None }];
    assert_eq!(picked_slot(&message("is Fri Nov 27, 10:00 AM open?"), &grounding), None);
    assert_eq!(picked_slot(&message("yes fri nov 27, 10:00 am or sat nov 28, 9:00 am"), &grounding), None);
    assert_eq!(
        picked_slot(&message("Book Sat Nov 28, 9:00 AM please"), &grounding),
        Some("2026-11-28T15:00:00Z".parse().expect("ts"))
    );
}

#[test]
fn the_conversation_is_trimmed_to_the_budget_newest_first_and_starts_with_the_customer() {
    let turn = |role, content: &str| StoredChatTurn {
        id: Uuid::now_v7(),
        role: role_name(role).into(),
        content: content.into(),
        status: "complete".into(),
    };
    fn role_name(role: ChatRole) -> &'static str {
        match role {
            ChatRole::User => "user",
            ChatRole::Assistant => "assistant",
        }
    }
    let long = "x".repeat(400); // 100 tokens
    let history = vec![
        turn(ChatRole::User, &long),
        turn(ChatRole::Assistant, &long),
        turn(ChatRole::User, &long),
        turn(ChatRole::Assistant, ""),
        turn(ChatRole::Assistant, &long),
        turn(ChatRole::User, "last"),
    ];
    let turns = conversation(&history);
    assert_eq!(turns.len(), 5, "the empty reply is skipped");
    let trimmed = trim_to_budget(turns.clone(), 250);
    // last (1) + assistant (100) + user (100) fit; the next assistant would exceed 250.
    assert_eq!(trimmed.len(), 3);
    assert_eq!(trimmed[0].role, ChatRole::User);
    assert_eq!(trimmed.last().map(|t| t.content.as_str()), Some("last"));
    // Even a budget of zero keeps the customer's last message.
    assert_eq!(trim_to_budget(turns, 0).len(), 1);
}

#[tokio::test]
async fn a_fresh_subscriber_after_a_reply_still_gets_that_turn_once() {
    let w = world(Gated::new("all done here", None), ChatPolicy::default());
    let mut sub = w.subscribe(None).await;
    let id = w.send("hello").await;
    let events = until_done(&mut sub.live).await;
    // A page that read the history just before the reply was stored opens its stream now.
    let late = w.subscribe(None).await;
    assert!(!late.reset);
    assert!(matches!(&events[0].kind, ChatEventKind::User { message_id, .. } if *message_id == id));
    let expected = events;
    assert_eq!(late.backlog, expected, "the whole latest turn, from the customer's message to done");
}
