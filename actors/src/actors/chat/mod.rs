//! `ChatSession`: one per open conversation, a child of its lead's location actor. It runs one
//! reply at a time (later customer messages queue, in order, and are answered together), and
//! broadcasts every event of the conversation (the customer's message, reply deltas, the end of
//! a reply, a booking) to all of the lead's SSE subscribers, so two tabs see the same stream.
//!
//! Events carry ids `{epoch}-{seq}`: `seq` grows by one per event and `epoch` names this
//! incarnation of the session. A subscriber that reconnects with the id of the last event it
//! saw gets exactly the events after it from the session's bounded backlog; an id of another
//! incarnation (or one older than the backlog) gets a `reset`, telling the page to reload the
//! history, which the store holds. Publishing and subscribing both happen inside the actor's
//! message loop, so a subscriber can neither miss nor repeat an event.
//!
//! A reply runs in its own task: a subscriber that disconnects does not cancel it; it completes
//! and is stored with its provider, model, tokens, cost and latencies (partial when the stream
//! broke after the first token). The session stops when idle with no subscribers and nothing to
//! do; the next message or subscriber starts a new one, which rebuilds from `chat_messages`.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use dashmap::DashMap;
use jiff::Timestamp;
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use serde::Serialize;
use tokio::sync::broadcast;
use uuid::Uuid;

use super::location::LocationRegistry;
use crate::ai::{AiError, BookingOutcome, ChatRequest, ChatRole, ChatTurn, Grounding, OfferedSlot, StreamEvent, Usage};
use crate::ai_router::ProviderRouter;
use crate::domain::{LeadId, LocationId, TenantId};
use crate::ports::{BookingError, ChatBackend, ChatStore, Clock, FinishedReply, ReplyEnd, StoreError};

/// Limits and timings of chat sessions.
#[derive(Debug, Clone)]
pub struct ChatPolicy {
    /// A session with nothing to do and no subscribers stops after this long.
    pub idle_after: Duration,
    /// The conversation sent to the model is trimmed, oldest turns first, to about this many
    /// tokens (estimated at four characters a token).
    pub history_token_budget: u32,
    pub max_tokens: u32,
    pub temperature: f32,
    /// Events kept for subscribers that reconnect.
    pub backlog: usize,
    /// Customer messages waiting for a reply beyond which new ones are refused.
    pub max_queued: usize,
    /// How long an SSE subscriber may fall behind before it must resubscribe.
    pub subscriber_buffer: usize,
}

impl Default for ChatPolicy {
    fn default() -> Self {
        ChatPolicy {
            idle_after: Duration::from_secs(300),
            history_token_budget: 3_000,
            max_tokens: 600,
            temperature: 0.3,
            backlog: 4_096,
            max_queued: 20,
            subscriber_buffer: 1_024,
        }
    }
}

/// What every chat session needs.
#[derive(Debug)]
pub struct ChatDeps {
    pub store: Arc<dyn ChatStore>,
    pub backend: Arc<dyn ChatBackend>,
    pub router: ProviderRouter,
    pub clock: Arc<dyn Clock>,
    pub policy: ChatPolicy,
}

/// One event of a conversation, as the SSE route sends it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ChatEvent {
    /// `{epoch}-{seq}`, for `Last-Event-ID`.
    pub id: String,
    #[serde(flatten)]
    pub kind: ChatEventKind,
}

/// What happened.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "event", content = "data", rename_all = "snake_case")]
pub enum ChatEventKind {
    /// The customer wrote (from any tab).
    User { message_id: Uuid, text: String },
    /// More reply text.
    Delta { message_id: Uuid, text: String },
    /// The reply ended; `slots` are the offered times it names (the page shows them as buttons).
    Done { message_id: Uuid, provider: String, model: String, usage: Usage, cost_micros: u64, slots: Vec<OfferedSlot> },
    /// The reply failed (after `partial_text`, if any, which is stored as a partial reply).
    Error { message_id_opt: Option<Uuid>, message: String },
    /// The customer's appointment is booked.
    Booked { appointment: OfferedSlot },
}

impl ChatEventKind {
    /// Returns the SSE event name.
    pub fn name(&self) -> &'static str {
        match self {
            ChatEventKind::User { .. } => "user",
            ChatEventKind::Delta { .. } => "delta",
            ChatEventKind::Done { .. } => "done",
            ChatEventKind::Error { .. } => "error",
            ChatEventKind::Booked { .. } => "booked",
        }
    }
}

/// A subscriber's start: the events it missed, then the live feed.
#[derive(Debug)]
pub struct Subscription {
    /// The subscriber's last id was of another incarnation or older than the backlog: reload
    /// the history before showing `backlog`.
    pub reset: bool,
    pub backlog: Vec<ChatEvent>,
    pub live: broadcast::Receiver<ChatEvent>,
}

/// Why a chat call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChatError {
    #[error("too many messages are waiting for a reply")]
    Busy,
    #[error("chat store: {0}")]
    Store(String),
    #[error("the lead was not found")]
    NotFound,
    #[error("the chat session did not answer")]
    Unavailable,
}

impl From<StoreError> for ChatError {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::NotFound => ChatError::NotFound,
            other => ChatError::Store(other.to_string()),
        }
    }
}

/// A customer message for the session.
#[derive(Debug, Clone)]
pub struct CustomerMessage {
    pub text: String,
    /// A slot the customer picked (the id of an offered slot).
    pub slot_opt: Option<Timestamp>,
}

/// Messages to a chat session.
#[derive(Debug)]
pub enum ChatMsg {
    /// A customer message: stored (the lead becomes `replied`), echoed, queued for a reply.
    Send(CustomerMessage, RpcReplyPort<Result<Uuid, ChatError>>),
    /// A new SSE subscriber, after the event id it saw last.
    Subscribe(Option<String>, RpcReplyPort<Subscription>),
    /// From the reply task.
    Reply(ReplyEvent),
    /// From itself, on a timer.
    IdleCheck,
}

/// Progress of the reply in flight.
#[derive(Debug)]
pub enum ReplyEvent {
    Publish(ChatEventKind),
    /// The reply task ended (successfully or not).
    Finished,
}

/// Which conversation a session serves.
#[derive(Debug, Clone)]
pub struct ChatArgs {
    pub tenant_id: TenantId,
    pub lead_id: LeadId,
}

/// The actor.
#[derive(Debug)]
pub struct ChatSession {
    deps: Arc<ChatDeps>,
    sessions: Arc<DashMap<(TenantId, LeadId), ActorRef<ChatMsg>>>,
}

/// A live session's state.
#[derive(Debug)]
pub struct ChatState {
    args: ChatArgs,
    epoch: String,
    next_seq: u64,
    backlog: VecDeque<(u64, ChatEvent)>,
    /// The seq of the first event of the current (or, when idle, the latest) turn: a customer
    /// message and its reply. A fresh subscriber gets the turn from there, so a page that read
    /// the history a moment before a reply was stored still sees it (it skips what it has by
    /// message id).
    turn_start_seq_opt: Option<u64>,
    live: broadcast::Sender<ChatEvent>,
    /// Messages waiting for a reply, with the seq of their `user` event.
    queue: VecDeque<(u64, CustomerMessage)>,
    replying: bool,
    last_activity: Instant,
}

impl ChatState {
    fn publish(&mut self, kind: ChatEventKind, backlog_cap: usize) {
        let seq = self.next_seq;
        self.next_seq += 1;
        let event = ChatEvent { id: format!("{}-{seq}", self.epoch), kind };
        if self.backlog.len() == backlog_cap {
            self.backlog.pop_front();
        }
        self.backlog.push_back((seq, event.clone()));
        // No subscriber is fine: the backlog and the store keep the conversation.
        let _ = self.live.send(event);
    }

    fn subscribe(&self, after_opt: Option<&str>) -> Subscription {
        let live = self.live.subscribe();
        let oldest_opt = self.backlog.front().map(|(seq, _)| *seq);
        let from_turn = |start_opt: Option<u64>| -> Vec<ChatEvent> {
            match start_opt {
                Some(start) => self.backlog.iter().filter(|(seq, _)| *seq >= start).map(|(_, e)| e.clone()).collect(),
                None => Vec::new(),
            }
        };
        let parsed = after_opt
            .and_then(|id| id.split_once('-'))
            .and_then(|(epoch, seq)| Some((epoch, seq.parse::<u64>().ok()?)));
        match parsed {
            None if after_opt.is_none() => {
                Subscription { reset: false, backlog: from_turn(self.turn_start_seq_opt), live }
            }
            Some((epoch, seq)) if epoch == self.epoch && seq < self.next_seq => {
                let covered = oldest_opt.is_none_or(|oldest| seq + 1 >= oldest);
                if covered {
                    let backlog = self.backlog.iter().filter(|(s, _)| *s > seq).map(|(_, e)| e.clone()).collect();
                    Subscription { reset: false, backlog, live }
                } else {
                    Subscription { reset: true, backlog: from_turn(self.turn_start_seq_opt), live }
                }
            }
            _ => Subscription { reset: true, backlog: from_turn(self.turn_start_seq_opt), live },
        }
    }
}

impl ChatSession {
    fn new(deps: Arc<ChatDeps>, sessions: Arc<DashMap<(TenantId, LeadId), ActorRef<ChatMsg>>>) -> Self {
        ChatSession { deps, sessions }
    }
}

impl Actor for ChatSession {
    type Msg = ChatMsg;
    type State = ChatState;
    type Arguments = ChatArgs;

    async fn pre_start(&self, myself: ActorRef<ChatMsg>, args: ChatArgs) -> Result<ChatState, ActorProcessingErr> {
        metrics::gauge!("leadorch_actors_alive", "kind" => "chat").increment(1.0);
        let tick = (self.deps.policy.idle_after / 2).max(Duration::from_millis(10));
        myself.send_interval(tick, || ChatMsg::IdleCheck);
        let (live, _) = broadcast::channel(self.deps.policy.subscriber_buffer.max(16));
        let epoch = format!("{:x}", Uuid::now_v7().as_u128() & 0xffff_ffff_ffff);
        Ok(ChatState {
            args,
            epoch,
            next_seq: 1,
            backlog: VecDeque::new(),
            turn_start_seq_opt: None,
            live,
            queue: VecDeque::new(),
            replying: false,
            last_activity: Instant::now(),
        })
    }

    async fn post_stop(&self, myself: ActorRef<ChatMsg>, state: &mut ChatState) -> Result<(), ActorProcessingErr> {
        self.sessions
            .remove_if(&(state.args.tenant_id, state.args.lead_id), |_, current| current.get_id() == myself.get_id());
        metrics::gauge!("leadorch_actors_alive", "kind" => "chat").decrement(1.0);
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<ChatMsg>,
        msg: ChatMsg,
        state: &mut ChatState,
    ) -> Result<(), ActorProcessingErr> {
        let started = Instant::now();
        let kind = match msg {
            ChatMsg::Send(message, reply) => {
                state.last_activity = Instant::now();
                let _ = reply.send(self.accept(&myself, state, message).await);
                "send"
            }
            ChatMsg::Subscribe(after_opt, reply) => {
                state.last_activity = Instant::now();
                let _ = reply.send(state.subscribe(after_opt.as_deref()));
                "subscribe"
            }
            ChatMsg::Reply(ReplyEvent::Publish(kind)) => {
                state.last_activity = Instant::now();
                state.publish(kind, self.deps.policy.backlog);
                "reply"
            }
            ChatMsg::Reply(ReplyEvent::Finished) => {
                state.replying = false;
                state.last_activity = Instant::now();
                self.start_reply_if_due(&myself, state);
                "reply"
            }
            ChatMsg::IdleCheck => {
                let idle = !state.replying
                    && state.queue.is_empty()
                    && state.live.receiver_count() == 0
                    && state.last_activity.elapsed() >= self.deps.policy.idle_after;
                if idle {
                    myself.stop(Some("idle".to_owned()));
                }
                "idle_check"
            }
        };
        metrics::histogram!("leadorch_actor_message_seconds", "kind" => "chat", "message" => kind)
            .record(started.elapsed().as_secs_f64());
        Ok(())
    }
}

impl ChatSession {
    async fn accept(
        &self,
        myself: &ActorRef<ChatMsg>,
        state: &mut ChatState,
        message: CustomerMessage,
    ) -> Result<Uuid, ChatError> {
        if state.queue.len() >= self.deps.policy.max_queued {
            return Err(ChatError::Busy);
        }
        let id =
            self.deps.store.record_customer_message(state.args.tenant_id, state.args.lead_id, &message.text).await?;
        let seq = state.next_seq;
        state.publish(ChatEventKind::User { message_id: id, text: message.text.clone() }, self.deps.policy.backlog);
        state.queue.push_back((seq, message));
        self.start_reply_if_due(myself, state);
        Ok(id)
    }

    fn start_reply_if_due(&self, myself: &ActorRef<ChatMsg>, state: &mut ChatState) {
        if state.replying || state.queue.is_empty() {
            return;
        }
        state.replying = true;
        state.turn_start_seq_opt = state.queue.front().map(|(seq, _)| *seq);
        let batch: Vec<CustomerMessage> = state.queue.drain(..).map(|(_, message)| message).collect();
        let deps = self.deps.clone();
        let args = state.args.clone();
        let session = myself.clone();
        tokio::spawn(async move {
            let reply_session = session.clone();
            let task = tokio::spawn(async move { reply(&deps, &args, &batch, &reply_session).await });
            if let Err(err) = task.await {
                tracing::error!(error = %err, "chat reply task failed");
                let _ = session.cast(ChatMsg::Reply(ReplyEvent::Publish(ChatEventKind::Error {
                    message_id_opt: None,
                    message: "The assistant stopped unexpectedly. Please try again.".to_owned(),
                })));
            }
            let _ = session.cast(ChatMsg::Reply(ReplyEvent::Finished));
        });
    }
}

fn publish(session: &ActorRef<ChatMsg>, kind: ChatEventKind) {
    let _ = session.cast(ChatMsg::Reply(ReplyEvent::Publish(kind)));
}

/// Tells the subscribers that no reply can be produced now (the store or the prompt failed).
fn publish_unavailable(session: &ActorRef<ChatMsg>) {
    publish(
        session,
        ChatEventKind::Error {
            message_id_opt: None,
            message: "The assistant is unavailable right now. Please try again in a minute.".to_owned(),
        },
    );
}

/// Words that, with an offered slot's label, mean the customer takes that slot.
const CONFIRM_WORDS: &[&str] = &["book", "yes", "confirm", "works", "take", "perfect", "great", "ok", "okay", "please"];

/// Returns the slot a message picks: the explicit pick, else an offered slot's label written
/// out together with a confirming word ("yes, Fri Nov 27, 10:00 AM works").
fn picked_slot(batch: &[CustomerMessage], grounding: &Grounding) -> Option<Timestamp> {
    if let Some(slot) = batch.iter().rev().find_map(|m| m.slot_opt) {
        return Some(slot);
    }
    let text = batch.last()?.text.to_lowercase();
    let confirms = text.split(|c: char| !c.is_alphanumeric()).any(|word| CONFIRM_WORDS.contains(&word));
    if !confirms {
        return None;
    }
    let mut named = grounding.slots.iter().filter(|slot| text.contains(&slot.label.to_lowercase()));
    match (named.next(), named.next()) {
        (Some(slot), None) => Some(slot.starts_at),
        _ => None,
    }
}

/// Answers a batch of customer messages: books a picked slot, gathers the lead's facts, and
/// streams a reply from the first provider that accepts it, storing it with its accounting.
async fn reply(deps: &ChatDeps, args: &ChatArgs, batch: &[CustomerMessage], session: &ActorRef<ChatMsg>) {
    let started = Instant::now();
    let (tenant_id, lead_id) = (args.tenant_id, args.lead_id);
    let mut grounding = match deps.backend.grounding(tenant_id, lead_id, deps.clock.now()).await {
        Ok(grounding) => grounding,
        Err(err) => {
            tracing::warn!(%lead_id, error = %err, "chat grounding failed");
            publish_unavailable(session);
            return;
        }
    };
    if let Some(starts_at) = picked_slot(batch, &grounding) {
        let outcome = match deps.backend.book(tenant_id, lead_id, starts_at, deps.clock.now()).await {
            Ok(slot) => {
                publish(session, ChatEventKind::Booked { appointment: slot.clone() });
                BookingOutcome::Booked { slot }
            }
            Err(BookingError::Unavailable | BookingError::AlreadyBooked) => {
                BookingOutcome::Unavailable { requested: starts_at.to_string() }
            }
            Err(BookingError::Failed(reason)) => {
                tracing::warn!(%lead_id, %reason, "booking failed");
                BookingOutcome::Failed
            }
        };
        // The facts changed (the appointment, the free slots): gather them again.
        if let Ok(fresh) = deps.backend.grounding(tenant_id, lead_id, deps.clock.now()).await {
            grounding = fresh;
        }
        grounding.booking_opt = Some(outcome);
    }
    let system = match deps.backend.render_system(&grounding) {
        Ok(system) => system,
        Err(err) => {
            tracing::error!(%lead_id, error = %err, "chat prompt failed to render");
            publish_unavailable(session);
            return;
        }
    };
    let history = match deps.store.history(tenant_id, lead_id).await {
        Ok(history) => history,
        Err(err) => {
            tracing::warn!(%lead_id, error = %err, "chat history unavailable");
            publish_unavailable(session);
            return;
        }
    };
    let turns = trim_to_budget(conversation(&history), deps.policy.history_token_budget);
    let message_id = match deps.store.start_reply(tenant_id, lead_id).await {
        Ok(id) => id,
        Err(err) => {
            tracing::warn!(%lead_id, error = %err, "chat reply could not be stored");
            publish_unavailable(session);
            return;
        }
    };
    let slots = grounding.slots.clone();
    let request = ChatRequest {
        system,
        turns,
        max_tokens: deps.policy.max_tokens,
        temperature: deps.policy.temperature,
        user_id_opt: Some(lead_id.to_string()),
        grounding_opt: Some(Arc::new(grounding)),
    };
    let mut text = String::new();
    let mut first_token_opt: Option<Duration> = None;
    let (end, provider_opt, model_opt, usage, cost_micros, error_opt) = match deps.router.stream(&request).await {
        Err(err) => (ReplyEnd::Error, None, None, Usage::default(), 0, Some(err)),
        Ok(mut routed) => {
            let mut outcome: Option<Result<Usage, AiError>> = None;
            while let Some(event) = routed.next().await {
                match event {
                    Ok(StreamEvent::Delta(delta)) => {
                        first_token_opt.get_or_insert_with(|| started.elapsed());
                        text.push_str(&delta);
                        publish(session, ChatEventKind::Delta { message_id, text: delta });
                    }
                    Ok(StreamEvent::Done(usage)) => {
                        outcome = Some(Ok(usage));
                        break;
                    }
                    Err(err) => {
                        outcome = Some(Err(err));
                        break;
                    }
                }
            }
            let outcome = outcome.unwrap_or_else(|| Err(AiError::Stream("the stream ended early".to_owned())));
            match outcome {
                Ok(usage) => {
                    let cost = routed.price.cost_micros(usage);
                    (ReplyEnd::Complete, Some(routed.provider), Some(routed.model), usage, cost, None)
                }
                Err(err) => {
                    let end = if text.is_empty() { ReplyEnd::Error } else { ReplyEnd::Partial };
                    (end, Some(routed.provider), Some(routed.model), Usage::default(), 0, Some(err))
                }
            }
        }
    };
    let total = started.elapsed();
    let finished = FinishedReply {
        content: text.clone(),
        end,
        provider_opt: provider_opt.clone(),
        model_opt: model_opt.clone(),
        usage,
        cost_micros,
        first_token_ms_opt: first_token_opt.map(|d| u32::try_from(d.as_millis()).unwrap_or(u32::MAX)),
        total_ms: u32::try_from(total.as_millis()).unwrap_or(u32::MAX),
    };
    if let Err(err) = store_with_retries(deps, tenant_id, message_id, &finished).await {
        tracing::error!(%lead_id, %message_id, error = %err, "chat reply could not be stored");
    }
    let provider = provider_opt.unwrap_or_default();
    metrics::counter!("leadorch_chat_replies_total", "provider" => provider.clone(), "end" => end_name(end))
        .increment(1);
    metrics::histogram!("leadorch_chat_reply_seconds", "provider" => provider.clone()).record(total.as_secs_f64());
    match error_opt {
        None => {
            let named = slots.into_iter().filter(|slot| text.contains(&slot.label)).collect();
            publish(
                session,
                ChatEventKind::Done {
                    message_id,
                    provider,
                    model: model_opt.unwrap_or_default(),
                    usage,
                    cost_micros,
                    slots: named,
                },
            );
        }
        Some(err) => {
            tracing::warn!(%lead_id, %message_id, error = %err, "chat reply failed");
            publish(
                session,
                ChatEventKind::Error {
                    message_id_opt: Some(message_id),
                    message: "The assistant could not finish its answer. Please try again.".to_owned(),
                },
            );
        }
    }
}

fn end_name(end: ReplyEnd) -> &'static str {
    match end {
        ReplyEnd::Complete => "complete",
        ReplyEnd::Partial => "partial",
        ReplyEnd::Error => "error",
    }
}

async fn store_with_retries(
    deps: &ChatDeps,
    tenant_id: TenantId,
    message_id: Uuid,
    finished: &FinishedReply,
) -> Result<(), StoreError> {
    let mut wait = Duration::from_millis(100);
    let mut attempt = 0;
    loop {
        match deps.store.finish_reply(tenant_id, message_id, finished).await {
            Err(err) if err.is_unavailable() && attempt < 6 => {
                attempt += 1;
                tokio::time::sleep(wait).await;
                wait *= 2;
            }
            other => return other,
        }
    }
}

/// Turns the stored conversation into model turns: customer and staff messages are the user
/// side, replies with text the assistant side; consecutive turns of one side are joined, and
/// the conversation starts with the customer.
fn conversation(history: &[crate::ports::StoredChatTurn]) -> Vec<ChatTurn> {
    let mut turns: Vec<ChatTurn> = Vec::new();
    for message in history {
        let role = match message.role.as_str() {
            "user" | "staff" => ChatRole::User,
            "assistant" if !message.content.trim().is_empty() => ChatRole::Assistant,
            _ => continue,
        };
        match turns.last_mut() {
            Some(last) if last.role == role => {
                last.content.push_str("\n\n");
                last.content.push_str(&message.content);
            }
            _ => turns.push(ChatTurn { role, content: message.content.clone() }),
        }
    }
    while turns.first().is_some_and(|t| t.role == ChatRole::Assistant) {
        turns.remove(0);
    }
    turns
}

fn estimate_tokens(text: &str) -> u32 {
    u32::try_from(text.chars().count().div_ceil(4)).unwrap_or(u32::MAX)
}

/// Keeps the newest turns that fit the budget (always the last one), starting with a customer
/// turn.
fn trim_to_budget(turns: Vec<ChatTurn>, budget: u32) -> Vec<ChatTurn> {
    let mut kept = 0;
    let mut used: u32 = 0;
    for turn in turns.iter().rev() {
        let cost = estimate_tokens(&turn.content);
        if kept > 0 && used.saturating_add(cost) > budget {
            break;
        }
        used = used.saturating_add(cost);
        kept += 1;
    }
    let mut trimmed: Vec<ChatTurn> = turns.into_iter().rev().take(kept).collect();
    trimmed.reverse();
    while trimmed.first().is_some_and(|t| t.role == ChatRole::Assistant) {
        trimmed.remove(0);
    }
    trimmed
}

/// Finds or starts a lead's chat session, as a child of its location's actor.
#[derive(Debug, Clone)]
pub struct ChatHub {
    deps: Arc<ChatDeps>,
    sessions: Arc<DashMap<(TenantId, LeadId), ActorRef<ChatMsg>>>,
    locations: LocationRegistry,
    spawn_lock: Arc<tokio::sync::Mutex<()>>,
}

const CALL_TIMEOUT: Duration = Duration::from_secs(10);

impl ChatHub {
    /// Creates the hub; sessions start under the location actors found in `locations`.
    pub fn new(deps: Arc<ChatDeps>, locations: LocationRegistry) -> Self {
        ChatHub { deps, sessions: Arc::default(), locations, spawn_lock: Arc::default() }
    }

    /// Returns how many sessions are live.
    pub fn live_sessions(&self) -> usize {
        self.sessions.len()
    }

    /// Returns the dependencies the sessions share (the router, for the health route).
    pub fn deps(&self) -> &Arc<ChatDeps> {
        &self.deps
    }

    async fn session(
        &self,
        tenant_id: TenantId,
        lead_id: LeadId,
        location_id: LocationId,
    ) -> Result<ActorRef<ChatMsg>, ChatError> {
        let key = (tenant_id, lead_id);
        if let Some(actor) = self.sessions.get(&key) {
            return Ok(actor.clone());
        }
        let _guard = self.spawn_lock.lock().await;
        if let Some(actor) = self.sessions.get(&key) {
            return Ok(actor.clone());
        }
        let behaviour = ChatSession::new(self.deps.clone(), self.sessions.clone());
        let args = ChatArgs { tenant_id, lead_id };
        let spawned = match self.locations.get(location_id) {
            Some(parent) => Actor::spawn_linked(None, behaviour, args, parent.get_cell()).await,
            // A location that is not active (yet) still lets its customers chat.
            None => Actor::spawn(None, behaviour, args).await,
        };
        let (actor, _join) = spawned.map_err(|err| {
            tracing::warn!(%lead_id, error = %err, "chat session failed to start");
            ChatError::Unavailable
        })?;
        self.sessions.insert(key, actor.clone());
        Ok(actor)
    }

    /// Sends a customer message; returns its id once it is stored.
    ///
    /// # Errors
    /// `Busy` when too many messages wait, `Store`/`NotFound` from the store, `Unavailable`
    /// when the session did not answer in time.
    pub async fn send(
        &self,
        tenant_id: TenantId,
        lead_id: LeadId,
        location_id: LocationId,
        message: CustomerMessage,
    ) -> Result<Uuid, ChatError> {
        for _ in 0..2 {
            let actor = self.session(tenant_id, lead_id, location_id).await?;
            let message = message.clone();
            match actor.call(|reply| ChatMsg::Send(message, reply), Some(CALL_TIMEOUT)).await {
                Ok(ractor::rpc::CallResult::Success(result)) => return result,
                Ok(_) => return Err(ChatError::Unavailable),
                // The session stopped between lookup and call: start a fresh one.
                Err(_) => self.forget(tenant_id, lead_id, &actor),
            }
        }
        Err(ChatError::Unavailable)
    }

    /// Subscribes to a conversation's events after `after_opt` (a `Last-Event-ID`).
    ///
    /// # Errors
    /// `Unavailable` when the session did not answer in time.
    pub async fn subscribe(
        &self,
        tenant_id: TenantId,
        lead_id: LeadId,
        location_id: LocationId,
        after_opt: Option<String>,
    ) -> Result<Subscription, ChatError> {
        for _ in 0..2 {
            let actor = self.session(tenant_id, lead_id, location_id).await?;
            let after = after_opt.clone();
            match actor.call(|reply| ChatMsg::Subscribe(after, reply), Some(CALL_TIMEOUT)).await {
                Ok(ractor::rpc::CallResult::Success(subscription)) => return Ok(subscription),
                Ok(_) => return Err(ChatError::Unavailable),
                Err(_) => self.forget(tenant_id, lead_id, &actor),
            }
        }
        Err(ChatError::Unavailable)
    }

    fn forget(&self, tenant_id: TenantId, lead_id: LeadId, actor: &ActorRef<ChatMsg>) {
        self.sessions.remove_if(&(tenant_id, lead_id), |_, current| current.get_id() == actor.get_id());
    }
}

#[cfg(test)]
mod tests;
