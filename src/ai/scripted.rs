//! The offline "scripted" provider: implements [`AiProvider`] without a language model, for the
//! offline demo, for installs without a vendor key, and as the last-resort fallback.
//!
//! It answers from the lead's facts ([`Grounding`], carried by [`ChatRequest::grounding_opt`])
//! with a few fixed rules, checked in order on the customer's last message: a booking that was
//! just attempted, a request for staff, opening hours, booking intent, prices, and otherwise a
//! greeting. It never invents a price: every amount it prints is a catalog line's own `price`.
//!
//! The reply is built whole by [`reply`] (pure and deterministic) and then streamed word by word,
//! optionally paced, so the chat page behaves as it does with a real model.

use std::collections::BTreeSet;
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::mpsc;
use tracing::debug;

use leadorch_actors::ai::{
    AiError, AiProvider, BookingOutcome, ChatRequest, ChatRole, Grounding, OfferedSlot, PriceLine, StreamEvent, Usage,
};

use super::{EventReceiver, STREAM_CHANNEL_CAPACITY, estimate_tokens};

/// Words and phrases asking for a person.
const HANDOFF_WORDS: &[&str] =
    &["human", "person", "someone", "staff", "manager", "call me", "speak", "talk to", "talk with", "representative"];

/// Words asking when the location is open.
const HOURS_WORDS: &[&str] = &["hour", "open", "opening", "close", "closed", "closing"];

/// Words and phrases asking for an appointment.
const BOOKING_WORDS: &[&str] = &[
    "book",
    "booking",
    "appointment",
    "schedule",
    "reschedule",
    "available",
    "availability",
    "slot",
    "come in",
    "bring it in",
    "when can",
];

/// Words and phrases asking for a price (`$` is matched anywhere in the message).
const PRICE_WORDS: &[&str] = &["price", "cost", "how much", "quote", "estimate", "$"];

/// Words that never identify a service when matching the catalog.
const STOPWORDS: &[&str] = &[
    "the", "for", "and", "how", "much", "does", "cost", "costs", "price", "prices", "what", "with", "you", "your",
    "are", "can", "get", "this", "that", "have", "want", "need", "would", "like", "please", "about", "quote",
    "estimate", "there", "hey", "hello", "thanks", "thank", "its", "it's", "from", "will", "just", "much",
];

/// Catalog lines quoted at most in one reply.
const MAX_QUOTED_LINES: usize = 3;

/// The offline provider; cheap to clone.
#[derive(Debug, Clone)]
pub struct ScriptedProvider {
    /// Reported as the model id, e.g. `scripted-1`.
    model: String,
    /// Pause between two words of a stream; zero sends them back to back.
    word_delay: Duration,
}

impl ScriptedProvider {
    /// Returns a provider reporting `model` and pausing `word_delay` between streamed words.
    pub fn new(model: impl Into<String>, word_delay: Duration) -> Self {
        Self { model: model.into(), word_delay }
    }
}

#[async_trait]
impl AiProvider for ScriptedProvider {
    fn name(&self) -> &str {
        "scripted"
    }

    fn model(&self) -> &str {
        &self.model
    }

    /// Streams [`reply`] to the last user turn word by word, then `Done` with an estimated
    /// input and one output token per word.
    ///
    /// # Errors
    /// [`AiError::InvalidRequest`] when the request carries no grounding.
    async fn stream(&self, request: &ChatRequest) -> Result<EventReceiver, AiError> {
        let Some(grounding) = request.grounding_opt.as_deref() else {
            return Err(AiError::InvalidRequest("the scripted provider needs the lead's facts".into()));
        };
        let last_user_message = request
            .turns
            .iter()
            .rev()
            .find(|turn| turn.role == ChatRole::User)
            .map_or("", |turn| turn.content.as_str());
        let deltas = split_words(&reply(grounding, last_user_message));
        let input_chars = request.system.chars().count()
            + request.turns.iter().map(|turn| turn.content.chars().count()).sum::<usize>();
        let usage = Usage {
            input_tokens: estimate_tokens(input_chars),
            output_tokens: u32::try_from(deltas.len()).unwrap_or(u32::MAX),
        };
        let (events_tx, events_rx) = mpsc::channel(STREAM_CHANNEL_CAPACITY);
        tokio::spawn(send_words(events_tx, deltas, usage, self.word_delay));
        Ok(events_rx)
    }
}

/// Sends the deltas, pausing `word_delay` between two, then `Done`; stops quietly when the
/// receiver is dropped.
async fn send_words(
    events_tx: mpsc::Sender<Result<StreamEvent, AiError>>,
    deltas: Vec<String>,
    usage: Usage,
    word_delay: Duration,
) {
    for (index, delta) in deltas.into_iter().enumerate() {
        if index > 0 && !word_delay.is_zero() {
            tokio::select! {
                () = tokio::time::sleep(word_delay) => {}
                () = events_tx.closed() => {
                    debug!("scripted stream abandoned by its receiver");
                    return;
                }
            }
        }
        if events_tx.send(Ok(StreamEvent::Delta(delta))).await.is_err() {
            debug!("scripted stream abandoned by its receiver");
            return;
        }
    }
    if events_tx.send(Ok(StreamEvent::Done(usage))).await.is_err() {
        debug!("scripted stream abandoned by its receiver");
    }
}

/// Splits text into words, each with the whitespace that follows it (leading whitespace goes
/// with the first word), so the pieces concatenate back to the text.
fn split_words(text: &str) -> Vec<String> {
    let mut pieces = Vec::new();
    let mut start = 0;
    let mut previous_was_space = false;
    for (index, ch) in text.char_indices() {
        let is_space = ch.is_whitespace();
        if previous_was_space && !is_space && index > start && !text[start..index].trim().is_empty() {
            pieces.push(text[start..index].to_owned());
            start = index;
        }
        previous_was_space = is_space;
    }
    if start < text.len() {
        pieces.push(text[start..].to_owned());
    }
    pieces
}

/// Returns the scripted answer to `last_user_message` from the lead's facts (rules in the module
/// docs); deterministic, and every amount in it is one of `grounding.prices`.
pub fn reply(grounding: &Grounding, last_user_message: &str) -> String {
    let message = Message::new(last_user_message);
    let text = if let Some(outcome) = &grounding.booking_opt {
        booking_outcome_reply(grounding, outcome)
    } else if message.mentions(HANDOFF_WORDS) {
        handoff_reply(grounding)
    } else if message.mentions(HOURS_WORDS) {
        hours_reply(grounding)
    } else if message.mentions(BOOKING_WORDS) {
        booking_reply(grounding)
    } else {
        let named = best_matches(&grounding.prices, &message.significant);
        if !named.is_empty() {
            quote_reply(grounding, &named)
        } else if message.mentions(PRICE_WORDS) {
            price_reply(grounding)
        } else {
            greeting_reply(grounding)
        }
    };
    text.trim_end().to_owned()
}

/// The customer's message, lowercased and cut into words.
struct Message {
    lowercase: String,
    words: Vec<String>,
    /// Stems of the words that may name a service.
    significant: Vec<String>,
}

impl Message {
    fn new(text: &str) -> Self {
        let lowercase = text.to_lowercase();
        let words = words_of(&lowercase);
        let significant = significant_stems(&words);
        Message { lowercase, words, significant }
    }

    /// Returns true when the message has one of `keywords`: a phrase as consecutive words, a
    /// single word by its stem (so "hours" matches "hour"), `$` anywhere.
    fn mentions(&self, keywords: &[&str]) -> bool {
        keywords.iter().any(|keyword| {
            if keyword.chars().any(char::is_alphanumeric) {
                let phrase = words_of(keyword);
                if let [word] = phrase.as_slice() {
                    let wanted = stem(word);
                    self.words.iter().any(|candidate| stem(candidate) == wanted)
                } else {
                    !phrase.is_empty() && self.words.windows(phrase.len()).any(|window| window == phrase.as_slice())
                }
            } else {
                self.lowercase.contains(keyword)
            }
        })
    }
}

/// Cuts lowercased text into runs of letters and digits.
fn words_of(lowercase: &str) -> Vec<String> {
    lowercase.split(|ch: char| !ch.is_alphanumeric()).filter(|word| !word.is_empty()).map(str::to_owned).collect()
}

/// Drops a plural `s` ("brakes" -> "brake", but not "glass").
fn stem(word: &str) -> &str {
    match word.strip_suffix('s') {
        Some(base) if base.chars().count() >= 3 && !base.ends_with('s') => base,
        _ => word,
    }
}

/// Returns the distinct stems of the words that may name a service: three letters or more, not
/// a stopword.
fn significant_stems(words: &[String]) -> Vec<String> {
    let stems: BTreeSet<&str> = words
        .iter()
        .filter(|word| word.chars().count() >= 3 && !STOPWORDS.contains(&word.as_str()))
        .map(|word| stem(word))
        .collect();
    stems.into_iter().map(str::to_owned).collect()
}

/// Returns the catalog lines sharing the most of `query` stems with their names (at least one),
/// in catalog order.
fn best_matches<'a>(prices: &'a [PriceLine], query: &[String]) -> Vec<&'a PriceLine> {
    let scores: Vec<usize> = prices
        .iter()
        .map(|line| {
            let name_words = words_of(&line.name.to_lowercase());
            let name_stems: BTreeSet<&str> = name_words.iter().map(|word| stem(word)).collect();
            query.iter().filter(|word| name_stems.contains(word.as_str())).count()
        })
        .collect();
    let best = scores.iter().copied().max().unwrap_or(0);
    if best == 0 {
        return Vec::new();
    }
    prices.iter().zip(&scores).filter(|&(_, &score)| score == best).map(|(line, _)| line).collect()
}

/// Rule 1: the outcome of the booking the customer just asked for.
fn booking_outcome_reply(grounding: &Grounding, outcome: &BookingOutcome) -> String {
    match outcome {
        BookingOutcome::Booked { slot } => booked_reply(grounding, slot, "You're booked for"),
        BookingOutcome::Unavailable { .. } => format!("Sorry, that time was just taken. {}", offer_slots(grounding)),
        BookingOutcome::Failed => format!(
            "Sorry, I couldn't finish booking that time. The team at {} will call you to confirm it{}.",
            grounding.location_name,
            phone_suffix(grounding, "; you can also reach them at"),
        ),
    }
}

/// Confirms an appointment, with the address when known.
fn booked_reply(grounding: &Grounding, slot: &OfferedSlot, lead: &str) -> String {
    let address = grounding
        .location_address_opt
        .as_deref()
        .map(str::trim)
        .filter(|address| !address.is_empty())
        .map(|address| format!(" The address is {address}."))
        .unwrap_or_default();
    format!("{lead} {} at {}.{address} If you need to change it, just reply here.", slot.label, grounding.location_name)
}

/// Rule 2: a person will follow up.
fn handoff_reply(grounding: &Grounding) -> String {
    format!(
        "I'll ask the team at {} to reach out to you{}.",
        grounding.location_name,
        phone_suffix(grounding, ", or call them at")
    )
}

/// Rule 3: the opening hours, a line per day.
fn hours_reply(grounding: &Grounding) -> String {
    if grounding.hours.is_empty() {
        return format!(
            "I don't have the hours on file; the team at {} can tell you{}.",
            grounding.location_name,
            phone_suffix(grounding, " at")
        );
    }
    format!("{} is open:\n{}", grounding.location_name, grounding.hours.join("\n"))
}

/// Rule 4: the booked appointment, or the free times.
fn booking_reply(grounding: &Grounding) -> String {
    match &grounding.appointment_opt {
        Some(appointment) => booked_reply(grounding, appointment, "You're already booked for"),
        None => offer_slots(grounding),
    }
}

/// Offers every free slot by its exact label (the chat page turns them into buttons), or staff
/// contact when there is none.
fn offer_slots(grounding: &Grounding) -> String {
    if grounding.slots.is_empty() {
        return format!(
            "I don't see any open times soon. I'll ask the team at {} to reach out to you{}.",
            grounding.location_name,
            phone_suffix(grounding, ", or call them at")
        );
    }
    let labels: Vec<&str> = grounding.slots.iter().map(|slot| slot.label.as_str()).collect();
    format!(
        "I can get your {} in at {}. Tap a time or tell me which works.",
        vehicle_or_car(grounding),
        join_naturally(&labels, "or")
    )
}

/// Rule 5 when the message names no catalog service: the requested services' prices, a sample
/// of the catalog, or a promise of a quote.
fn price_reply(grounding: &Grounding) -> String {
    let mut matched = BTreeSet::new();
    for service in &grounding.requested_services {
        let query = significant_stems(&words_of(&service.to_lowercase()));
        for line in best_matches(&grounding.prices, &query) {
            matched.insert(line.name.as_str());
        }
    }
    let requested: Vec<&PriceLine> =
        grounding.prices.iter().filter(|line| matched.contains(line.name.as_str())).collect();
    if !requested.is_empty() {
        return quote_reply(grounding, &requested);
    }
    if grounding.prices.is_empty() {
        return format!(
            "I don't have prices on file here; the team at {} will send you an exact quote.",
            grounding.location_name
        );
    }
    let sample: Vec<&PriceLine> = grounding.prices.iter().take(MAX_QUOTED_LINES).collect();
    format!(
        "Here are some of our prices at {}:\n{}\nThe team can quote anything else.",
        grounding.location_name,
        price_lines(&sample)
    )
}

/// Quotes up to three catalog lines.
fn quote_reply(grounding: &Grounding, lines: &[&PriceLine]) -> String {
    let lines = &lines[..lines.len().min(MAX_QUOTED_LINES)];
    let heading = if lines.len() == 1 { "Here's the price" } else { "Here are the prices" };
    format!("{heading} at {}:\n{}\nWant me to find you a time?", grounding.location_name, price_lines(lines))
}

/// Renders `name: price` lines.
fn price_lines(lines: &[&PriceLine]) -> String {
    lines.iter().map(|line| format!("{}: {}", line.name, line.price)).collect::<Vec<_>>().join("\n")
}

/// Rule 6: a greeting saying what the assistant can do.
fn greeting_reply(grounding: &Grounding) -> String {
    let first_name =
        grounding.first_name_opt.as_deref().map(str::trim).filter(|name| !name.is_empty()).unwrap_or("there");
    // A customer-typed service with an amount in it must not read like a quoted price.
    let services: Vec<&str> = grounding
        .requested_services
        .iter()
        .map(|service| service.trim())
        .filter(|service| !service.is_empty() && !service.contains('$'))
        .collect();
    let services_part = if services.is_empty() {
        String::new()
    } else {
        format!(" and the {} you asked about", join_naturally(&services, "and"))
    };
    format!(
        "Hi {first_name}! I'm the assistant for {}. I can help with your {}{services_part}: prices, hours, or booking a time.",
        grounding.location_name,
        vehicle_or_car(grounding),
    )
}

/// The vehicle as the lead gave it, or "car".
fn vehicle_or_car(grounding: &Grounding) -> &str {
    grounding.vehicle_opt.as_deref().map(str::trim).filter(|vehicle| !vehicle.is_empty()).unwrap_or("car")
}

/// Returns `"{lead} {phone}"` when the location has a phone, else nothing.
fn phone_suffix(grounding: &Grounding, lead: &str) -> String {
    grounding
        .location_phone_opt
        .as_deref()
        .map(str::trim)
        .filter(|phone| !phone.is_empty())
        .map(|phone| format!("{lead} {phone}"))
        .unwrap_or_default()
}

/// Joins items as a person would: "a", "a or b", "a, b or c".
fn join_naturally(items: &[&str], conjunction: &str) -> String {
    match items {
        [] => String::new(),
        [only] => (*only).to_owned(),
        [init @ .., last] => format!("{} {conjunction} {last}", init.join(", ")),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use proptest::prelude::*;

    use leadorch_actors::ai::ChatTurn;

    use super::super::test_support::{chat, collect, text_of};
    use super::*;

    const LABELS: [&str; 3] = ["Fri Nov 27, 10:00 AM", "Fri Nov 27, 1:00 PM", "Mon Nov 30, 9:00 AM"];

    fn price(name: &str, price_cents: i64) -> PriceLine {
        let price = format!("${}.{:02}", price_cents / 100, price_cents % 100);
        PriceLine { name: name.to_owned(), price_cents, price }
    }

    fn slot(starts_at: &str, label: &str) -> OfferedSlot {
        let starts_at: jiff::Timestamp = starts_at.parse().expect("timestamp");
        let ends_at = starts_at + jiff::SignedDuration::from_hours(2);
        OfferedSlot { id: starts_at.to_string(), starts_at, ends_at, label: label.to_owned() }
    }

    fn grounding() -> Grounding {
        Grounding {
            first_name_opt: Some("Maria".to_owned()),
            vehicle_opt: Some("2021 Tesla Model 3".to_owned()),
            requested_services: vec!["Ceramic tint".to_owned()],
            location_name: "Tint Co Austin".to_owned(),
            location_phone_opt: Some("(512) 555-0100".to_owned()),
            location_address_opt: Some("1200 S Lamar Blvd, Austin, TX".to_owned()),
            timezone: "America/Chicago".to_owned(),
            now_label: "Thursday, November 26, 2026 3:05 PM".to_owned(),
            hours: vec![
                "Monday: 8:00 AM - 6:00 PM".to_owned(),
                "Saturday: 9:00 AM - 2:00 PM".to_owned(),
                "Sunday: closed".to_owned(),
            ],
            prices: vec![
                price("Ceramic tint - full vehicle", 39900),
                price("Windshield strip", 10900),
                price("Tint removal", 14900),
                price("Paint protection film - front", 129900),
            ],
            slots: vec![
                slot("2026-11-27T16:00:00Z", LABELS[0]),
                slot("2026-11-27T19:00:00Z", LABELS[1]),
                slot("2026-11-30T15:00:00Z", LABELS[2]),
            ],
            appointment_opt: None,
            booking_opt: None,
        }
    }

    /// Every `$` amount in `text`.
    fn amounts(text: &str) -> Vec<String> {
        text.match_indices('$')
            .map(|(index, _)| {
                let rest = &text[index + 1..];
                let end = rest.find(|ch: char| !(ch.is_ascii_digit() || ch == '.' || ch == ',')).unwrap_or(rest.len());
                format!("${}", rest[..end].trim_end_matches(['.', ',']))
            })
            .collect()
    }

    fn assert_only_catalog_amounts(grounding: &Grounding, text: &str) {
        for amount in amounts(text) {
            assert!(
                grounding.prices.iter().any(|line| line.price == amount),
                "{amount} is not in the catalog: {text:?}"
            );
        }
    }

    #[test]
    fn a_price_question_quotes_the_catalog_price_only() {
        let grounding = grounding();

        let text = reply(&grounding, "How much does a windshield strip cost?");

        assert!(text.contains("Windshield strip: $109.00"), "{text}");
        assert_eq!(amounts(&text), ["$109.00"]);
        assert_only_catalog_amounts(&grounding, &text);
    }

    #[test]
    fn a_price_question_without_a_service_quotes_the_requested_services() {
        let grounding = grounding();

        let text = reply(&grounding, "what's the price?");

        assert!(text.contains("Ceramic tint - full vehicle: $399.00"), "{text}");
        assert_only_catalog_amounts(&grounding, &text);
    }

    #[test]
    fn an_unknown_service_lists_some_prices_and_an_empty_catalog_none() {
        let mut grounding = grounding();
        grounding.requested_services.clear();

        let sample = reply(&grounding, "how much for an oil change?");
        grounding.prices.clear();
        let no_catalog = reply(&grounding, "how much for an oil change?");

        assert!(sample.contains("Ceramic tint - full vehicle: $399.00"), "{sample}");
        assert!(sample.contains("Tint removal: $149.00"), "{sample}");
        assert!(!sample.contains("Paint protection"), "at most three lines: {sample}");
        assert!(sample.contains("quote anything else"), "{sample}");
        assert!(!no_catalog.contains('$') && no_catalog.contains("exact quote"), "{no_catalog}");
    }

    #[test]
    fn booking_intent_lists_every_slot_label() {
        let text = reply(&grounding(), "Can I book an appointment?");

        for label in LABELS {
            assert!(text.contains(label), "{label} missing: {text}");
        }
        assert!(text.starts_with("I can get your 2021 Tesla Model 3 in at"), "{text}");
    }

    #[test]
    fn booking_intent_with_an_appointment_repeats_it() {
        let mut grounding = grounding();
        grounding.appointment_opt = Some(slot("2026-11-30T15:00:00Z", LABELS[2]));

        let text = reply(&grounding, "when can I bring it in?");

        assert!(text.starts_with(&format!("You're already booked for {}", LABELS[2])), "{text}");
    }

    #[test]
    fn a_booked_outcome_confirms_the_label() {
        let mut grounding = grounding();
        grounding.booking_opt = Some(BookingOutcome::Booked { slot: slot("2026-11-27T19:00:00Z", LABELS[1]) });

        let text = reply(&grounding, "Fri Nov 27, 1:00 PM");

        assert!(text.starts_with("You're booked for Fri Nov 27, 1:00 PM at Tint Co Austin."), "{text}");
        assert!(text.contains("1200 S Lamar Blvd") && text.contains("reply here"), "{text}");
    }

    #[test]
    fn an_unavailable_outcome_offers_the_slots() {
        let mut grounding = grounding();
        grounding.booking_opt = Some(BookingOutcome::Unavailable { requested: "2026-11-27T16:00:00Z".to_owned() });

        let text = reply(&grounding, "Fri Nov 27, 10:00 AM");

        assert!(text.starts_with("Sorry, that time was just taken."), "{text}");
        for label in LABELS {
            assert!(text.contains(label), "{label} missing: {text}");
        }
    }

    #[test]
    fn a_failed_outcome_promises_a_call() {
        let mut grounding = grounding();
        grounding.booking_opt = Some(BookingOutcome::Failed);

        let text = reply(&grounding, "Mon Nov 30, 9:00 AM");

        assert!(text.starts_with("Sorry"), "{text}");
        assert!(text.contains("(512) 555-0100"), "{text}");
    }

    #[test]
    fn hours_lists_the_lines() {
        let grounding = grounding();

        let text = reply(&grounding, "What are your hours on Saturday?");

        assert!(text.starts_with("Tint Co Austin is open:\n"), "{text}");
        for line in &grounding.hours {
            assert!(text.lines().any(|candidate| candidate == line), "{line} missing: {text}");
        }
    }

    #[test]
    fn asking_for_a_person_hands_off_to_staff() {
        let text = reply(&grounding(), "Can I talk to a real person please");

        assert_eq!(text, "I'll ask the team at Tint Co Austin to reach out to you, or call them at (512) 555-0100.");
    }

    #[test]
    fn a_greeting_names_the_lead_vehicle_and_services() {
        let text = reply(&grounding(), "hi");

        assert_eq!(
            text,
            "Hi Maria! I'm the assistant for Tint Co Austin. I can help with your 2021 Tesla Model 3 and the \
             Ceramic tint you asked about: prices, hours, or booking a time."
        );
    }

    #[test]
    fn the_same_input_gives_the_same_text() {
        let grounding = grounding();

        for message in ["hi", "how much is tint?", "book me in", "hours?", "manager"] {
            assert_eq!(reply(&grounding, message), reply(&grounding, message));
        }
    }

    #[test]
    fn split_words_concatenates_back() {
        let text = "  Tint Co Austin is open:\nMonday: 8:00 AM\t- 6:00 PM  ";

        let pieces = split_words(text);

        assert_eq!(pieces.concat(), text);
        assert_eq!(pieces[0], "  Tint ");
        assert!(split_words("").is_empty());
    }

    #[tokio::test]
    async fn the_stream_spells_out_the_reply() {
        let provider = ScriptedProvider::new("scripted-1", Duration::from_millis(1));
        let mut request = chat("How much is ceramic tint?");
        request.turns.push(ChatTurn { role: ChatRole::Assistant, content: "Earlier answer.".to_owned() });
        request.grounding_opt = Some(Arc::new(grounding()));

        let events = collect(provider.stream(&request).await.expect("stream")).await;

        let deltas = events.iter().filter(|event| matches!(event, Ok(StreamEvent::Delta(_)))).count();
        assert_eq!(text_of(&events), reply(&grounding(), "How much is ceramic tint?"));
        assert!(deltas > 1, "{events:?}");
        let input_chars = request.system.chars().count() + request.turns.iter().map(|t| t.content.len()).sum::<usize>();
        let expected = Usage {
            input_tokens: u32::try_from(input_chars.div_ceil(4)).expect("small"),
            output_tokens: u32::try_from(deltas).expect("small"),
        };
        assert_eq!(events.last(), Some(&Ok(StreamEvent::Done(expected))));
        assert_eq!((provider.name(), provider.model()), ("scripted", "scripted-1"));
    }

    #[tokio::test]
    async fn a_request_without_grounding_is_invalid() {
        let provider = ScriptedProvider::new("scripted-1", Duration::ZERO);

        let result = provider.stream(&chat("hi")).await;

        assert_eq!(
            result.err(),
            Some(AiError::InvalidRequest("the scripted provider needs the lead's facts".to_owned()))
        );
    }

    #[tokio::test]
    async fn a_dropped_receiver_stops_the_stream_quietly() {
        let provider = ScriptedProvider::new("scripted-1", Duration::from_millis(5));
        let mut request = chat("hi");
        request.grounding_opt = Some(Arc::new(grounding()));

        let mut events = provider.stream(&request).await.expect("stream");
        let first = events.recv().await;
        drop(events);

        assert!(matches!(first, Some(Ok(StreamEvent::Delta(_)))), "{first:?}");
    }

    /// Messages mixing the words the rules look for with catalog words and noise.
    fn message() -> impl Strategy<Value = String> {
        let word = prop_oneof![
            Just("price".to_owned()),
            Just("how much".to_owned()),
            Just("$50".to_owned()),
            Just("tint".to_owned()),
            Just("windshield".to_owned()),
            Just("book".to_owned()),
            Just("hours".to_owned()),
            Just("manager".to_owned()),
            "[a-z]{1,8}",
            "\\PC{0,6}",
        ];
        prop_oneof![any::<String>(), prop::collection::vec(word, 0..8).prop_map(|words| words.join(" "))]
    }

    /// The fixture, possibly with a booking outcome, no slots, no requested services or no catalog.
    fn grounding_variant(variant: u8) -> Grounding {
        let mut grounding = grounding();
        match variant {
            1 => grounding.booking_opt = Some(BookingOutcome::Booked { slot: slot("2026-11-27T16:00:00Z", LABELS[0]) }),
            2 => grounding.booking_opt = Some(BookingOutcome::Unavailable { requested: "soon".to_owned() }),
            3 => grounding.booking_opt = Some(BookingOutcome::Failed),
            4 => grounding.slots.clear(),
            5 => grounding.requested_services.clear(),
            6 => grounding.prices.clear(),
            _ => {}
        }
        grounding
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn replies_quote_only_catalog_amounts(text in message(), variant in 0u8..8) {
            let grounding = grounding_variant(variant);

            let answer = reply(&grounding, &text);

            prop_assert!(!answer.is_empty());
            prop_assert_eq!(answer.trim_end(), answer.as_str());
            for amount in amounts(&answer) {
                prop_assert!(grounding.prices.iter().any(|line| line.price == amount), "{} in {:?}", amount, answer);
            }
        }
    }
}
