//! `leadorch loadgen --chat-streams N`: measures the latency the server adds when it relays a
//! model's streamed reply to the customers' SSE connections, with N chat streams at once.
//!
//! The set-up is the webhook mode's (see [`super`]): the ShopMonkey fake, a fresh tenant
//! "Loadgen <time>" with `--locations` shops (at most N), the app in-process on loopback. Added
//! to it: an Anthropic fake as the chat's model vendor (no retries, no other vendor, the chat
//! rate limit out of the way), scripted to answer every message with the same
//! `--chat-reply-words` words, two words a text delta, one delta every `--chat-delta-ms`, and
//! logging the instant it hands each delta to its response body ([`AiEmission`]). N leads are
//! inserted in one statement, spread over the locations, and each gets a magic-link token.
//! Once the app is up, every location's catalog is read once through the staff route, so that
//! the replies find their prices in the cache as they would in steady state, rather than all
//! waiting for (and competing for the CPU with) the CRM fake's catalog pages at once. The
//! webhook phase does not run in this mode, and the JSON object on stdout is a [`ChatSummary`].
//!
//! The run: open the N `GET /api/chat/{lead}/stream` at once and wait until each has answered
//! its headers (the server subscribes before it answers, so no delta can be missed); POST one
//! message per lead, all at once; read every stream to its `done` (or `error`), noting when
//! each `delta` event arrived (the instant its chunk was read, before any parsing).
//!
//! The relay latency of a delta is its arrival instant minus the fake's emission instant for
//! the same lead and delta index, both from the one monotonic clock of the process. Matching by
//! index is exact because leadorch relays deltas one for one (an Anthropic `text_delta` is one
//! `StreamEvent::Delta`, one `ChatEventKind::Delta`, one SSE `delta` event) and the fake keys
//! its log by the request's `metadata.user_id`, which leadorch sets to the lead id. The figure
//! covers the fake's socket write, the app's read and SSE parsing, the provider reader and
//! router tasks, the reply task, the chat session's mailbox and broadcast, the SSE response
//! task and its socket write, and the load generator's own read. The fake, the load generator
//! and the app share the process and its cores, so it is an upper bound of what the server
//! alone adds on the same machine.
//!
//! It is bounded: streams connect within [`CONNECT_WITHIN`] of being opened, and replies end
//! within [`REPLIES_WITHIN`] plus the scripted reply's own length after that; what is missing
//! then is counted in `errors`. The tenant is deactivated at the end, as in the webhook mode.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use futures::StreamExt;
use leadorch_actors::domain::{LeadId, Location, TenantId};
use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use super::{
    LoadgenOptions, Percentiles, ms, note, percentiles_us, prepare, random_secret, retire, round1, rss_mb, scrape,
    send_for_status, start_app, stop_app,
};
use crate::ai::sse::{SseDecoder, SseFrame};
use crate::config::Settings;
use crate::config::ai::ProviderKind;
use crate::links::LinkSigner;
use crate::ops;
use crate::sim::anthropic::{AiEmission, AnthropicSim, AnthropicSimConfig};
use crate::store::Store;

/// The longest wait for the N streams to answer their headers.
pub const CONNECT_WITHIN: Duration = Duration::from_secs(30);
/// The longest wait, after [`CONNECT_WITHIN`], for every reply to end (plus the time the fake
/// takes to play one reply).
pub const REPLIES_WITHIN: Duration = Duration::from_secs(60);
/// One POST may take this long.
const POST_TIMEOUT: Duration = Duration::from_secs(30);
/// The chat's per-lead rate limit in this mode: out of the way (a lead makes two requests).
const RATE_LIMIT_PER_MINUTE: u32 = 1_000_000;
/// Catalog reads in flight at most while warming.
const CATALOG_WARMUP_CONCURRENCY: usize = 8;
/// The chat leads' order ids start with this.
const LEAD_ORDER_PREFIX: &str = "chat_";
/// What every customer asks.
const MESSAGE: &str = "How much is ceramic tint for a sedan, and when could you fit me in?";
/// The scripted reply cycles through the words of this.
const REPLY_WORDS: &str = "Ceramic tint for a sedan is $399 and takes about three hours. We can fit you in on \
                           Friday morning or Saturday afternoon; which suits you best?";

/// The JSON object `leadorch loadgen --chat-streams N` prints.
#[derive(Debug, Clone, Serialize)]
pub struct ChatSummary {
    /// Streams asked for.
    pub chat_streams: usize,
    /// Streams that answered 200 within [`CONNECT_WITHIN`].
    pub connected: usize,
    /// From opening the streams to the last one connected (or giving up).
    pub connect_ms: f64,
    /// Messages answered 202.
    pub messages_accepted: usize,
    /// Streams that received the whole scripted reply, then `done` from the Anthropic fake.
    pub replies_completed: usize,
    /// `delta` events received over all streams.
    pub deltas: u64,
    /// Of those, the ones matched to the fake's emission of the same lead and index.
    pub deltas_matched: u64,
    /// Arrival minus emission of every matched delta.
    pub relay_latency_ms: Option<Percentiles>,
    /// The same over the deltas emitted while every reply was streaming, none starting or
    /// ending (from the last reply's first delta to the first reply's last): the relay without
    /// the replies' start (storing the message, the lead's facts, the prompt) and end (storing
    /// the reply) competing with it for the CPU. Null when the replies never all streamed at
    /// once (their starts spread over more than one reply's length: raise `--chat-reply-words`).
    pub relay_latency_all_streaming_ms: Option<Percentiles>,
    /// How long every reply was streaming at once.
    pub all_streaming_ms: f64,
    /// From posting a message to its reply's first delta arriving: storing the message,
    /// gathering the lead's facts, the prompt, and the fake's first delta (after one
    /// `--chat-delta-ms`).
    pub first_delta_ms: Option<Percentiles>,
    /// The most replies streaming at one instant (from a reply's first emission to its last
    /// delta's arrival): how much the N replies overlapped.
    pub replies_streaming_max: usize,
    /// Failures by kind: `connect_status_NNN`, `connect_timeout`, `connect`, `post_status_NNN`,
    /// `post_timeout`, `post`, `reply_timeout`, `stream_closed`, `stream_broken`,
    /// `stream_unreadable`, `reply_error` (an `error` event), `fallback_provider` (a `done` from
    /// another provider), `reply_text_mismatch`, `unmatched_delta`.
    pub errors: BTreeMap<String, u64>,
    pub reply_words: usize,
    /// Text deltas in one reply.
    pub deltas_per_reply: usize,
    /// The fake's pause before each delta.
    pub delta_interval_ms: f64,
    /// Resident memory of the whole process (app, fakes and load generator) at the end.
    pub rss_mb_end: Option<f64>,
    /// From `Application::build_with` to the first 200 from /readyz.
    pub startup_ms: f64,
    /// Reading every location's catalog once, before the streams open.
    pub catalog_warmup_ms: f64,
    pub locations: usize,
    pub tenant_id: TenantId,
}

/// Runs the chat measurement and returns its summary (the caller prints it).
///
/// # Errors
/// The database cannot be prepared, the leads cannot be inserted, or a fake or the app cannot
/// start.
pub async fn run_chat(mut settings: Settings, options: LoadgenOptions) -> anyhow::Result<ChatSummary> {
    let streams = options.chat_streams.max(1);
    let locations = options.locations.clamp(1, streams);
    let rig = prepare(&settings, locations, 1).await?;
    let started = Instant::now();
    let leads = insert_leads(&rig.store, rig.tenant_id, &rig.locations, streams).await?;
    note(&format!("inserted {} chat leads in {} ms", leads.len(), ms(started.elapsed())));

    let model_key = format!("sk-ant-loadgen-{}", uuid::Uuid::new_v4().simple());
    let model = AnthropicSim::start(AnthropicSimConfig { api_key: model_key.clone() })
        .await
        .context("failed to start the anthropic fake")?;
    let reply = scripted_reply(options.chat_reply_words);
    model.set_reply(&reply);
    model.set_chunk_delay(options.chat_delta_interval);
    model.record_emissions(true);
    note(&format!("anthropic fake at {}", model.base_url()));
    use_model(&mut settings, &model, model_key);
    let secret_key = settings.secrets.secret_key_opt.get_or_insert_with(random_secret).clone();
    let links = LinkSigner::new(&secret_key, &settings.http.public_url, settings.links_valid_for);
    let now = jiff::Timestamp::now();
    let tokens: Vec<String> = leads.iter().map(|lead_id| links.token(rig.tenant_id, *lead_id, now)).collect();

    let app = start_app(settings, &rig, streams).await?;
    let started = Instant::now();
    warm_catalogs(&app.http, &app.base_url, &rig, CATALOG_WARMUP_CONCURRENCY).await?;
    let catalog_warmup_ms = ms(started.elapsed());
    note(&format!("read {} location catalogs in {catalog_warmup_ms} ms", rig.locations.len()));
    let plan = Plan {
        base_url: app.base_url.clone(),
        leads,
        tokens,
        reply,
        deltas_per_reply: options.chat_reply_words.div_ceil(2),
        delta_interval: options.chat_delta_interval,
    };
    let measured = async {
        let observed = drive(&plan).await?;
        let run = RunFacts {
            rss_mb_end: rss_mb(&scrape(&app.http, &app.base_url).await),
            startup_ms: app.startup_ms,
            catalog_warmup_ms,
            locations: rig.locations.len(),
            tenant_id: rig.tenant_id,
        };
        anyhow::Ok(summarize(&plan, observed, &model.emissions(), run))
    }
    .await;

    stop_app(app).await;
    retire(rig).await;
    model.shutdown().await;
    measured
}

/// Makes the Anthropic fake the chat's only model vendor (the offline scripted provider stays
/// the last resort, and is counted as `fallback_provider` if it ever answers).
fn use_model(settings: &mut Settings, model: &AnthropicSim, key: String) {
    settings.ai.provider_opt = Some(ProviderKind::Anthropic);
    settings.ai.fallback = Vec::new();
    settings.ai.anthropic.base_url = model.base_url();
    // A retry would be a second stream for the lead in the emission log.
    settings.ai.anthropic.max_retries = 0;
    settings.ai.rate_limit_per_minute = RATE_LIMIT_PER_MINUTE;
    settings.secrets.anthropic_api_key_opt = Some(SecretString::from(key));
    settings.secrets.openai_api_key_opt = None;
}

/// Reads every location's catalog once through `GET /api/locations/{id}/catalog`, at most
/// `concurrency` at a time, with a staff key made for it. A catalog that cannot be had is only
/// noted: its replies then go without prices, as they would in production.
async fn warm_catalogs(
    http: &reqwest::Client,
    base_url: &str,
    rig: &super::Rig,
    concurrency: usize,
) -> anyhow::Result<()> {
    let staff = ops::add_api_key(&rig.store, rig.tenant_id, "loadgen").await?;
    let reads = futures::stream::iter(&rig.locations)
        .map(|location| {
            let request = http.get(format!("{base_url}/api/locations/{}/catalog", location.id)).bearer_auth(&staff.key);
            async move { request.send().await.map(|response| response.status()) }
        })
        .buffer_unordered(concurrency.max(1));
    let outcomes: Vec<reqwest::Result<reqwest::StatusCode>> = reads.collect().await;
    let failed = outcomes.iter().filter(|outcome| !outcome.as_ref().is_ok_and(|status| status.is_success())).count();
    if failed > 0 {
        note(&format!("{failed} location catalogs could not be read; their replies go without prices"));
    }
    Ok(())
}

/// Returns `words` words of a plausible answer.
fn scripted_reply(words: usize) -> String {
    REPLY_WORDS.split_whitespace().cycle().take(words.max(1)).collect::<Vec<_>>().join(" ")
}

/// Inserts `count` leads of the tenant, round-robin over its locations, in one statement;
/// returns their ids.
async fn insert_leads(
    store: &Store,
    tenant_id: TenantId,
    locations: &[Location],
    count: usize,
) -> anyhow::Result<Vec<LeadId>> {
    let location_ids: Vec<uuid::Uuid> = locations.iter().map(|l| l.id.as_uuid()).collect();
    let count = i64::try_from(count).context("too many leads")?;
    let client = store.pool.get().await.context("database unavailable")?;
    let rows = client
        .query(
            "INSERT INTO leads (id, tenant_id, location_id, crm_source, crm_order_id, crm_customer_id, status,
                                first_name, last_name, email, received_at, first_touch_at)
             SELECT gen_random_uuid(), $1, ($2::uuid[])[1 + (g % cardinality($2::uuid[]))::int], 'shopmonkey',
                    $3::text || g, 'chat_cus_' || g, 'in_cadence', 'Chat', 'Lead', 'chat' || g || '@example.com',
                    now(), now()
             FROM generate_series(0, $4::bigint - 1) AS g
             RETURNING id",
            &[&tenant_id.as_uuid(), &location_ids, &LEAD_ORDER_PREFIX, &count],
        )
        .await
        .context("failed to insert the chat leads")?;
    Ok(rows.iter().map(|row| LeadId::from_uuid(row.get(0))).collect())
}

/// What to drive: one stream and one message per lead.
#[derive(Debug)]
struct Plan {
    base_url: String,
    leads: Vec<LeadId>,
    /// `tokens[i]` opens `leads[i]`'s chat.
    tokens: Vec<String>,
    /// The fake's scripted answer, which every stream must receive whole.
    reply: String,
    deltas_per_reply: usize,
    delta_interval: Duration,
}

/// What driving the streams produced.
#[derive(Debug)]
struct Observed {
    /// `records[i]` is what `leads[i]`'s stream saw.
    records: Vec<StreamRecord>,
    /// `posted_at[i]`: when `leads[i]`'s message was sent, if it was accepted.
    posted_at: Vec<Option<Instant>>,
    connected: usize,
    connect_ms: f64,
    errors: BTreeMap<String, u64>,
}

/// The summary's facts about the app and the tenant.
#[derive(Debug)]
struct RunFacts {
    rss_mb_end: Option<f64>,
    startup_ms: f64,
    catalog_warmup_ms: f64,
    locations: usize,
    tenant_id: TenantId,
}

/// Opens the streams, waits for them to connect, posts the messages, and reads the streams to
/// their end (or the deadline).
async fn drive(plan: &Plan) -> anyhow::Result<Observed> {
    let streams = plan.leads.len();
    let http = reqwest::Client::builder()
        .no_proxy()
        .tcp_nodelay(true)
        .connect_timeout(Duration::from_secs(5))
        .pool_max_idle_per_host(streams)
        .build()
        .context("failed to build the http client")?;
    let started = Instant::now();
    let connect_deadline = started + CONNECT_WITHIN;
    let reply_length = plan.delta_interval.saturating_mul(u32::try_from(plan.deltas_per_reply).unwrap_or(u32::MAX));
    let end_deadline = connect_deadline + REPLIES_WITHIN + reply_length;

    let (connected_tx, mut connected_rx) = mpsc::unbounded_channel::<(usize, bool)>();
    // `readers[i]` follows `leads[i]`'s stream.
    let mut readers = Vec::with_capacity(streams);
    for (index, (lead_id, token)) in plan.leads.iter().zip(&plan.tokens).enumerate() {
        let request = http
            .get(format!("{}/api/chat/{lead_id}/stream", plan.base_url))
            .bearer_auth(token)
            .header(reqwest::header::ACCEPT, "text/event-stream");
        let connected_tx = connected_tx.clone();
        readers.push(tokio::spawn(follow(request, connected_tx, index, connect_deadline, end_deadline)));
    }
    drop(connected_tx);
    let mut connected = Vec::with_capacity(streams);
    let mut answered = 0;
    while answered < streams {
        match tokio::time::timeout_at(connect_deadline.into(), connected_rx.recv()).await {
            Ok(Some((index, is_connected))) => {
                answered += 1;
                if is_connected {
                    connected.push(index);
                }
            }
            Ok(None) | Err(_) => break,
        }
    }
    let connect_ms = ms(started.elapsed());
    let connected_count = connected.len();
    note(&format!("{connected_count}/{streams} streams connected in {connect_ms} ms"));

    let mut errors = BTreeMap::new();
    let mut posted_at = vec![None; streams];
    let mut posts = JoinSet::new();
    for index in connected {
        let request = http
            .post(format!("{}/api/chat/{}", plan.base_url, plan.leads[index]))
            .bearer_auth(&plan.tokens[index])
            .timeout(POST_TIMEOUT)
            .json(&serde_json::json!({ "message": MESSAGE }));
        posts.spawn(async move {
            let sent_at = Instant::now();
            let result = send_for_status(request).await;
            (index, sent_at, result)
        });
    }
    while let Some(joined) = posts.join_next().await {
        let (index, sent_at, result) = joined.context("a message task failed")?;
        match result {
            Ok(status) if status == reqwest::StatusCode::ACCEPTED => posted_at[index] = Some(sent_at),
            Ok(status) => count(&mut errors, &format!("post_status_{}", status.as_u16())),
            Err(err) => count(&mut errors, &format!("post{}", transport_suffix(&err))),
        }
    }
    note(&format!("{} messages accepted; reading the replies", posted_at.iter().flatten().count()));

    let mut records = Vec::with_capacity(streams);
    for (index, reader) in readers.into_iter().enumerate() {
        let connected_without_message = posted_at[index].is_none() && !reader.is_finished();
        if connected_without_message {
            // No reply is coming: the post failed (counted above).
            reader.abort();
        }
        match reader.await {
            Ok((record, failure_opt)) => {
                if let Some(failure) = failure_opt {
                    count(&mut errors, &failure);
                }
                records.push(record);
            }
            Err(err) if err.is_cancelled() => records.push(StreamRecord::default()),
            Err(err) => return Err(err).context("a stream task failed"),
        }
    }
    Ok(Observed { records, posted_at, connected: connected_count, connect_ms, errors })
}

/// Opens one stream, reports whether it connected, then reads it until its reply ends or
/// `end_deadline`; returns what it saw and why it stopped early, if it did.
async fn follow(
    request: reqwest::RequestBuilder,
    connected_tx: mpsc::UnboundedSender<(usize, bool)>,
    index: usize,
    connect_deadline: Instant,
    end_deadline: Instant,
) -> (StreamRecord, Option<String>) {
    let mut record = StreamRecord::default();
    let mut response = match tokio::time::timeout_at(connect_deadline.into(), request.send()).await {
        Ok(Ok(response)) if response.status() == reqwest::StatusCode::OK => response,
        outcome => {
            // The receiver is gone only once connecting is over; then nobody needs to know.
            let _ = connected_tx.send((index, false));
            let failure = match outcome {
                Ok(Ok(response)) => format!("connect_status_{}", response.status().as_u16()),
                Ok(Err(err)) => format!("connect{}", transport_suffix(&err)),
                Err(_) => "connect_timeout".to_owned(),
            };
            return (record, Some(failure));
        }
    };
    let _ = connected_tx.send((index, true));
    drop(connected_tx);
    let mut decoder = SseDecoder::new();
    loop {
        let chunk = match tokio::time::timeout_at(end_deadline.into(), response.chunk()).await {
            Ok(Ok(Some(chunk))) => chunk,
            Ok(Ok(None)) => return (record, Some("stream_closed".to_owned())),
            Ok(Err(_)) => return (record, Some("stream_broken".to_owned())),
            Err(_) => return (record, Some("reply_timeout".to_owned())),
        };
        let arrived_at = Instant::now();
        let Ok(frames) = decoder.push(&chunk) else {
            return (record, Some("stream_unreadable".to_owned()));
        };
        for frame in &frames {
            if record.observe(frame, arrived_at) {
                return (record, None);
            }
        }
    }
}

/// `_timeout`, `` (connect errors) or `_request`: what kind of transport failure it was.
fn transport_suffix(err: &reqwest::Error) -> &'static str {
    if err.is_timeout() {
        "_timeout"
    } else if err.is_connect() {
        ""
    } else {
        "_request"
    }
}

fn count(errors: &mut BTreeMap<String, u64>, kind: &str) {
    *errors.entry(kind.to_owned()).or_default() += 1;
}

/// What one stream saw of its reply.
#[derive(Debug, Default)]
struct StreamRecord {
    /// Arrival of each `delta` event, in order: the position is the delta's index.
    delta_arrivals: Vec<Instant>,
    /// The deltas' text, joined.
    text: String,
    end_opt: Option<StreamEnd>,
}

/// How a reply ended.
#[derive(Debug, Clone, PartialEq, Eq)]
enum StreamEnd {
    /// A `done` event naming the provider that answered.
    Done { provider: String },
    /// An `error` event.
    Error,
}

/// The part of a `delta` or `done` event's data that is read here.
#[derive(Debug, Default, Deserialize)]
struct EventData {
    #[serde(default)]
    text: String,
    #[serde(default)]
    provider: String,
}

impl StreamRecord {
    /// Takes one event that arrived at `arrived_at`; returns whether the reply has ended. A
    /// `delta` whose data cannot be read still counts (its text is then missing from `text`);
    /// `user`, `booked`, `reset` and unknown events are ignored.
    fn observe(&mut self, frame: &SseFrame, arrived_at: Instant) -> bool {
        let data = || serde_json::from_str::<EventData>(&frame.data).unwrap_or_default();
        match frame.event_opt.as_deref() {
            Some("delta") => {
                self.delta_arrivals.push(arrived_at);
                self.text.push_str(&data().text);
                false
            }
            Some("done") => {
                self.end_opt = Some(StreamEnd::Done { provider: data().provider });
                true
            }
            Some("error") => {
                self.end_opt = Some(StreamEnd::Error);
                true
            }
            _ => false,
        }
    }
}

/// Matches the received deltas with the fake's emissions and computes the summary.
fn summarize(plan: &Plan, observed: Observed, emissions: &[AiEmission], run: RunFacts) -> ChatSummary {
    let Observed { records, posted_at, connected, connect_ms, mut errors } = observed;
    // By lead, the emission instant of each delta index.
    let mut emitted: HashMap<Arc<str>, Vec<Option<Instant>>> = HashMap::new();
    for emission in emissions {
        let slots = emitted.entry(Arc::clone(&emission.user_id)).or_default();
        let index = usize::try_from(emission.index).unwrap_or(usize::MAX);
        if slots.len() <= index {
            slots.resize(index + 1, None);
        }
        slots[index] = Some(emission.at);
    }
    // (emission, latency in µs) of every matched delta.
    let mut matched: Vec<(Instant, u64)> = Vec::new();
    // Per stream with a reply: its first and last emission.
    let mut emission_spans = Vec::new();
    let mut first_delta_us = Vec::new();
    let mut streaming = Vec::new();
    let (mut deltas, mut replies_completed) = (0_u64, 0);
    for (index, record) in records.iter().enumerate() {
        let lead_id = plan.leads[index].to_string();
        let emitted_opt = emitted.get(lead_id.as_str());
        for (delta_index, arrived_at) in record.delta_arrivals.iter().enumerate() {
            deltas += 1;
            match emitted_opt.and_then(|slots| slots.get(delta_index).copied().flatten()) {
                Some(emitted_at) => {
                    matched.push((emitted_at, micros(arrived_at.saturating_duration_since(emitted_at))))
                }
                None => count(&mut errors, "unmatched_delta"),
            }
        }
        if let (Some(posted), Some(first)) = (posted_at[index], record.delta_arrivals.first()) {
            first_delta_us.push(micros(first.saturating_duration_since(posted)));
        }
        let first_emission_opt = emitted_opt.and_then(|slots| slots.iter().flatten().min().copied());
        let last_emission_opt = emitted_opt.and_then(|slots| slots.iter().flatten().max().copied());
        if let (Some(first), Some(last)) = (first_emission_opt, last_emission_opt) {
            emission_spans.push((first, last));
        }
        if let (Some(start), Some(end)) = (first_emission_opt, record.delta_arrivals.last()) {
            streaming.push((start, *end));
        }
        match &record.end_opt {
            Some(StreamEnd::Done { provider }) if provider != "anthropic" => count(&mut errors, "fallback_provider"),
            Some(StreamEnd::Done { .. }) if record.text != plan.reply => count(&mut errors, "reply_text_mismatch"),
            Some(StreamEnd::Done { .. }) => replies_completed += 1,
            Some(StreamEnd::Error) => count(&mut errors, "reply_error"),
            None => {}
        }
    }
    let window_opt = all_streaming_window(&emission_spans);
    let mut all_streaming_us: Vec<u64> = match window_opt {
        Some((start, end)) => {
            matched.iter().filter(|(emitted_at, _)| (start..=end).contains(emitted_at)).map(|(_, us)| *us).collect()
        }
        None => Vec::new(),
    };
    let mut latencies_us: Vec<u64> = matched.iter().map(|(_, us)| *us).collect();
    ChatSummary {
        chat_streams: plan.leads.len(),
        connected,
        connect_ms,
        messages_accepted: posted_at.iter().flatten().count(),
        replies_completed,
        deltas,
        deltas_matched: latencies_us.len() as u64,
        relay_latency_ms: percentiles_us(&mut latencies_us),
        relay_latency_all_streaming_ms: percentiles_us(&mut all_streaming_us),
        all_streaming_ms: window_opt.map_or(0.0, |(start, end)| ms(end - start)),
        first_delta_ms: percentiles_us(&mut first_delta_us),
        replies_streaming_max: most_overlapping(&streaming),
        errors,
        reply_words: plan.reply.split_whitespace().count(),
        deltas_per_reply: plan.deltas_per_reply,
        delta_interval_ms: round1(plan.delta_interval.as_secs_f64() * 1000.0),
        rss_mb_end: run.rss_mb_end,
        startup_ms: run.startup_ms,
        catalog_warmup_ms: run.catalog_warmup_ms,
        locations: run.locations,
        tenant_id: run.tenant_id,
    }
}

fn micros(elapsed: Duration) -> u64 {
    u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX)
}

/// Returns the instants between which every span was open, from the latest start to the
/// earliest end; `None` when the spans never all overlapped.
fn all_streaming_window(spans: &[(Instant, Instant)]) -> Option<(Instant, Instant)> {
    let start = spans.iter().map(|(first, _)| *first).max()?;
    let end = spans.iter().map(|(_, last)| *last).min()?;
    (start < end).then_some((start, end))
}

/// The most intervals `[start, end]` that hold one instant.
fn most_overlapping(intervals: &[(Instant, Instant)]) -> usize {
    // Starts sort before ends at the same instant, so touching intervals overlap.
    let mut edges: Vec<(Instant, bool)> =
        intervals.iter().flat_map(|(start, end)| [(*start, false), (*end, true)]).collect();
    edges.sort_unstable();
    let (mut open, mut most) = (0_usize, 0_usize);
    for (_, is_end) in edges {
        if is_end {
            open = open.saturating_sub(1);
        } else {
            open += 1;
            most = most.max(open);
        }
    }
    most
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(wire: &str) -> Vec<SseFrame> {
        SseDecoder::new().push(wire.as_bytes()).expect("frames")
    }

    #[test]
    fn a_stream_record_counts_deltas_in_order_and_ends_at_done() {
        let wire = "id: e-1\nevent: user\ndata: {\"message_id\":\"m\",\"text\":\"Hi\"}\n\n\
                    : heartbeat\n\n\
                    id: e-2\nevent: delta\ndata: {\"message_id\":\"r\",\"text\":\"Ceramic tint \"}\n\n\
                    id: e-3\nevent: delta\ndata: {\"message_id\":\"r\",\"text\":\"is $399.\"}\n\n\
                    id: e-4\nevent: done\ndata: {\"message_id\":\"r\",\"provider\":\"anthropic\",\"model\":\"m\"}\n\n";
        let mut record = StreamRecord::default();
        let at = Instant::now();

        let ended: Vec<bool> = frames(wire).iter().map(|frame| record.observe(frame, at)).collect();

        assert_eq!(ended, [false, false, false, true]);
        assert_eq!(record.delta_arrivals, [at, at]);
        assert_eq!(record.text, "Ceramic tint is $399.");
        assert_eq!(record.end_opt, Some(StreamEnd::Done { provider: "anthropic".to_owned() }));
    }

    #[test]
    fn an_error_event_ends_the_reply_and_an_unreadable_delta_still_counts() {
        let wire = "event: delta\ndata: not json\n\nevent: error\ndata: {\"message\":\"sorry\"}\n\n";
        let mut record = StreamRecord::default();

        let ended: Vec<bool> = frames(wire).iter().map(|frame| record.observe(frame, Instant::now())).collect();

        assert_eq!(ended, [false, true]);
        assert_eq!((record.delta_arrivals.len(), record.text.as_str()), (1, ""));
        assert_eq!(record.end_opt, Some(StreamEnd::Error));
    }

    #[test]
    fn the_scripted_reply_has_the_asked_words() {
        assert_eq!(scripted_reply(3), "Ceramic tint for");
        assert_eq!(scripted_reply(100).split_whitespace().count(), 100);
    }

    #[test]
    fn overlap_counts_the_intervals_open_at_one_instant() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let intervals = [(at(0), at(10)), (at(5), at(15)), (at(10), at(20)), (at(30), at(40))];

        assert_eq!(most_overlapping(&intervals), 3);
        assert_eq!(most_overlapping(&[]), 0);
        assert_eq!(all_streaming_window(&intervals[..3]), None, "the three share one instant only");
        assert_eq!(all_streaming_window(&intervals[..2]), Some((at(5), at(10))));
        assert_eq!(all_streaming_window(&[]), None);
    }

    #[test]
    fn latencies_match_each_delta_to_its_emission_by_lead_and_index() {
        let t0 = Instant::now();
        let at = |us: u64| t0 + Duration::from_micros(us);
        let lead = LeadId::from_uuid(uuid::Uuid::now_v7());
        let plan = Plan {
            base_url: String::new(),
            leads: vec![lead],
            tokens: vec![String::new()],
            reply: "a b c".to_owned(),
            deltas_per_reply: 2,
            delta_interval: Duration::from_millis(20),
        };
        let user_id: Arc<str> = Arc::from(lead.to_string());
        let emission = |index: u32, us: u64| AiEmission { user_id: Arc::clone(&user_id), index, at: at(us) };
        let record = StreamRecord {
            delta_arrivals: vec![at(1_500), at(22_000), at(40_000)],
            text: "a b c".to_owned(),
            end_opt: Some(StreamEnd::Done { provider: "anthropic".to_owned() }),
        };
        let observed = Observed {
            records: vec![record],
            posted_at: vec![Some(t0)],
            connected: 1,
            connect_ms: 1.0,
            errors: BTreeMap::new(),
        };
        let run = RunFacts {
            rss_mb_end: None,
            startup_ms: 1.0,
            catalog_warmup_ms: 1.0,
            locations: 1,
            tenant_id: TenantId::new(),
        };

        let summary = summarize(&plan, observed, &[emission(1, 20_000), emission(0, 1_000)], run);

        assert_eq!((summary.deltas, summary.deltas_matched, summary.replies_completed), (3, 2, 1));
        let latency = summary.relay_latency_ms.expect("latencies");
        assert_eq!((latency.p50, latency.max), (0.5, 2.0));
        assert_eq!(summary.errors, BTreeMap::from([("unmatched_delta".to_owned(), 1)]));
        assert_eq!(summary.first_delta_ms.map(|p| p.p50), Some(1.5));
        assert_eq!(summary.replies_streaming_max, 1);
        assert_eq!(summary.relay_latency_all_streaming_ms, Some(latency));
        assert_eq!(summary.all_streaming_ms, 19.0);
    }
}
