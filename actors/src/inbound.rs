//! Classifies the body of an inbound SMS from a customer: an opt-out, an opt-in, a request for
//! help, or an ordinary message. Owns the keyword lists, the plain-language revocation table and
//! the text normalisation they are matched against; acting on the result (consent, cancelling
//! touchpoints, replies) is left to the caller.
//!
//! Order of precedence:
//! 1. Twilio's `OptOutType` field (`STOP`, `START`, `HELP`), when present, is authoritative:
//!    Twilio has already acted on it (external-apis.md §2.6).
//! 2. A keyword that is the *whole* message, after [`normalise`] and with inner spaces removed
//!    ("STOP.", "stop!!", "Opt-Out", "opt out").
//! 3. A plain-language revocation anywhere in the message ("please stop texting me"), because
//!    US rules let consumers revoke consent by any reasonable means. This table is conservative:
//!    a real customer question treated as an opt-out loses the customer, so a pattern only goes
//!    in when the phrase is a clear request to stop contact.
//! 4. Anything else is a [`InboundIntent::Message`], including declines ("no thanks").

/// Says what an inbound SMS body asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InboundIntent {
    /// The sender revokes consent to be texted.
    OptOut(OptOutKind),
    /// The sender opts back in (START, UNSTOP, YES).
    ///
    /// YES is also an everyday answer ("yes" to "shall we book you?"), so the caller honours it
    /// as an opt-in only when the sender is currently opted out, and otherwise treats it as a
    /// [`InboundIntent::Message`].
    OptIn,
    /// The sender asks for help (HELP, INFO); Twilio answers these itself when Advanced Opt-Out
    /// is on.
    Help,
    /// An ordinary message for the shop.
    Message,
}

/// Says how an opt-out was recognised, so the audit trail can tell a carrier keyword from our
/// own reading of free text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OptOutKind {
    /// Twilio's `OptOutType` was `STOP`, or the whole message was an opt-out keyword.
    Keyword,
    /// A phrase from [`PLAIN_LANGUAGE_OPT_OUTS`] matched somewhere in the message.
    PlainLanguage,
}

/// Holds the opt-out keywords, normalised with inner spaces removed ("opt-out" is `optout`):
/// Twilio's default list plus Spanish single words.
pub const OPT_OUT_KEYWORDS: &[&str] = &[
    "stop",
    "stopall",
    "unsubscribe",
    "cancel",
    "end",
    "quit",
    "revoke",
    "optout",
    "alto",
    "para",
    "parar",
    "basta",
    "cancelar",
    "detener",
];

/// Holds the opt-in keywords, normalised with inner spaces removed; see [`InboundIntent::OptIn`]
/// for why YES needs care.
pub const OPT_IN_KEYWORDS: &[&str] = &["start", "unstop", "yes"];

/// Holds the help keywords, normalised with inner spaces removed.
pub const HELP_KEYWORDS: &[&str] = &["help", "info"];

/// Holds the plain-language revocations, matched against the [`normalise`]d message.
///
/// Each pattern is a sequence of space-separated tokens; the pattern matches when its tokens
/// match consecutive words somewhere in the message:
/// - `a|b|c` matches one of the alternatives; `do_not` inside an alternative matches the two
///   words "do not" (normalised text never contains `_`);
/// - a trailing `?` makes the token optional (`please|pls?`);
/// - `..` skips up to three arbitrary words;
/// - `^` as the first token anchors the pattern at the start of the message, and the
///   alternative `$` matches only at its end.
///
/// Words are written as [`normalise`] produces them: lowercase, no accents, no apostrophes
/// ("dont", "envien"). A test checks this for every entry.
pub const PLAIN_LANGUAGE_OPT_OUTS: &[&str] = &[
    // "stop texting me", "please stop texting", "stop messaging me", "stop contacting me"
    "stop texting|txting|texing|messaging|msging|contacting|spamming|harassing|bugging",
    // "stop text me", "stop calling me"
    "stop text|txt|message|msg|contact|calling|emailing me|us",
    // "stop sending me messages", "stop sending these"
    "stop sending .. texts|text|txts|txt|messages|message|msgs|msg|sms|these|this|spam",
    // "please stop", "stop please", "just stop it" as the whole message ("stop by" stays a message)
    "^ please|pls|plz|just|ok|okay? stop it|this|that|now|already? please|pls|plz|thanks|thank_you|thx|ty? $",
    // "please remove me", "remove me please" as the whole message ("remove me from the 3pm slot" isn't)
    "^ please|pls|plz? remove me|us please|pls|plz|thanks|thank_you|thx|ty? $",
    // "remove me from your list", "take me off your list", "take me off the mailing list";
    // "remove me from the wait list" stays a message because "wait" is not a list word here
    "remove|take|get|delete|drop|unsubscribe|unsub me|us off|from your|ur|the|this|these|that|all? mailing|text|texting|sms|contact|contacts|marketing|call|calling|messaging|email|subscriber? list|lists",
    // "remove me from your texts", "take me off your system"
    "remove|take|get|delete|drop|unsubscribe|unsub me|us off|from your|ur|the|this|these|that|all? texts|txts|text_messages|messages|texting|messaging|sms|database|system|marketing|mailing|promotions|promos|alerts|notifications",
    // "lose my number", "delete my number", "remove this number"
    "remove|delete|lose|erase|forget my|this|our number|num",
    // "delete my info"
    "delete|erase my|our info|information|data|details",
    // "don't contact me", "do not contact me again", "dont text me", "do not text this number";
    // the phrase must end the message or be followed by again/anymore/please.., so "you don't
    // contact me when it's ready" and "don't text me, call me instead" stay messages
    "dont|do_not|dnt text|txt|message|msg|contact|sms|bother|spam me|us|this_number|this_phone again|anymore|any_more|ever|no_more|at_all|at_this|on_this|please|pls|plz|thanks|thank_you|thx|$",
    // "never contact me again"
    "never text|txt|message|msg|contact me|us again",
    // "I don't want these texts", "do not want text messages"
    "dont|do_not want|need any|these|your|the|more|to_get|to_receive? texts|text|txts|messages|msgs|sms|texting|messaging",
    // "no more texts please"
    "no more texts|text|txts|txt|messages|message|msgs|msg|sms|texting|messaging|spam",
    // "cancel my texts", "end these text messages" (but "cancel my appointment" stays a message)
    "cancel|end my|the|these|all? texts|txts|text_messages|sms|text_alerts",
    // "unsubscribe me", "please unsubscribe", "I want to unsubscribe", "I'd like to opt out"
    "unsubscribe|unsub me|us|this|my",
    "please|pls|plz unsubscribe|unsub",
    "want_to|wanna|like_to|need_to|wish_to unsubscribe|unsub|opt_out|optout",
    // "opt me out", "I opt out"
    "opt me|us|this_number out",
    "^ i|we opt_out|optout $",
    // "leave me alone"
    "leave me|us alone",
    // "wrong number" as the whole message, "you have the wrong number", "wrong number, stop",
    // "stop, wrong number" ("is this the wrong number?" stays a message)
    "^ wrong|wrng number|num|person $",
    "^ sorry? you|u have|got|texted|text the|a wrong number|person $",
    "wrong number|person .. stop|remove|delete|unsubscribe",
    "stop .. wrong number|person",
    // Spanish. "no me envíen más", "no me envien mas mensajes", "no me manden mensajes"
    // ("no me envíen la factura" stays a message)
    "no me|nos envien|envies|envie|mandes|manden|mande mas|mensajes|mensaje|textos|texto|sms|msj|msjs|nada|$",
    // "no me escriban", "no me contacten", "no me molesten": the subjunctive of a negative
    // command, so the complaint "¿por qué no me escriben?" stays a message
    "no me|nos escriban|escribas|escriba|contacten|contactes|contacte|molesten|molestes|moleste|texteen|textees|textee",
    // "dejen de escribirme", "dejen de enviarme mensajes", "paren de mandarme"
    "deja|dejen|deje|dejes|dejar|dejan|para|pare|paren|parar de escribirme|enviarme|mandarme|contactarme|molestarme|textearme|escribirnos|enviarnos|mandarnos|contactarnos|molestarnos",
    // "dejen de enviar mensajes"
    "deja|dejen|deje|dejes|dejar|dejan|para|pare|paren|parar de enviar|mandar|escribir mensajes|mensaje|textos|texto|sms|msj|msjs",
    // "no quiero más mensajes", "no quiero recibir mensajes"
    "no quiero|queremos|quiere|deseo|deseamos mas|recibir|recibir_mas|ningun|ningunos? mensajes|mensaje|textos|texto|sms|msj|msjs",
    // "no quiero que me escriban"
    "no quiero|queremos|deseo que me|nos escriban|envien|manden|contacten|molesten|escriba|envie|mande|contacte",
    // "no más mensajes"
    "no mas mensajes|mensaje|textos|texto|sms|msj|msjs",
    // "bórrenme de su lista", "quítenme de la lista de contactos"; the words after "lista" are
    // spelled out so "sáquenme de la lista de espera" (the wait list) stays a message
    "borrenme|borrame|borreme|quitenme|quitame|quiteme|saquenme|sacame|saqueme|eliminenme|eliminame|elimineme de|del su|la|tu|sus|las|esta|esa? lista|listas $|de_contactos|de_difusion|de_mensajes|de_envios|de_clientes|de_correos|de_promociones|por_favor|porfa|gracias|ya|pls",
    // "sáquenme de su sistema", "bórrenme de sus contactos"
    "borrenme|borrame|borreme|quitenme|quitame|quiteme|saquenme|sacame|saqueme|eliminenme|eliminame|elimineme de|del su|tu|sus|el|esta|este? sistema|contactos|base_de_datos|mensajes|envios|difusion",
    // "borren mi número"
    "borren|borra|borre|quiten|quita|quite|eliminen|elimina|elimine mi|este numero",
    // "denme de baja", "quiero darme de baja"
    "denme|dame|deme|darme|darnos|denos de_baja",
    // "déjenme en paz"
    "dejenme|dejame|dejeme|dejennos en_paz",
    // "número equivocado" as the whole message
    "^ numero|persona equivocado|equivocada $",
];

/// The most words a `..` token skips.
const MAX_GAP_WORDS: usize = 3;

/// Classifies an inbound SMS `body`, given Twilio's `OptOutType` field when the webhook carried
/// one.
///
/// `opt_out_type_opt` (`STOP`, `START` or `HELP`, any case) wins over the body. A value that is
/// blank or not one of those three is ignored and the body decides. A YES comes back as
/// [`InboundIntent::OptIn`]; see that variant for how the caller must treat it.
pub fn classify(body: &str, opt_out_type_opt: Option<&str>) -> InboundIntent {
    if let Some(intent) = opt_out_type_opt.and_then(intent_from_opt_out_type) {
        return intent;
    }
    let normalised_body = normalise(body);
    if let Some(intent) = keyword_intent(&normalised_body) {
        return intent;
    }
    if first_matching_pattern(&normalised_body).is_some() {
        return InboundIntent::OptOut(OptOutKind::PlainLanguage);
    }
    InboundIntent::Message
}

/// Returns `text` in the form the keyword lists and [`PLAIN_LANGUAGE_OPT_OUTS`] are written in:
/// lowercase, accents folded ("envíen" becomes "envien", composed or not), apostrophes dropped
/// ("don’t" and "don't" become "dont"), every other character that is not a letter or digit
/// (punctuation, emoji, whitespace) turned into a single space, and no leading or trailing space.
pub fn normalise(text: &str) -> String {
    let mut normalised = String::with_capacity(text.len());
    let mut is_space_pending = false;
    for lowered in text.chars().flat_map(char::to_lowercase) {
        if is_apostrophe(lowered) || is_combining_mark(lowered) {
            continue;
        }
        let folded = fold_accent(lowered);
        if !folded.is_alphanumeric() {
            is_space_pending = true;
            continue;
        }
        if is_space_pending && !normalised.is_empty() {
            normalised.push(' ');
        }
        is_space_pending = false;
        normalised.push(folded);
    }
    normalised
}

fn intent_from_opt_out_type(opt_out_type: &str) -> Option<InboundIntent> {
    let opt_out_type = opt_out_type.trim();
    if opt_out_type.eq_ignore_ascii_case("stop") {
        Some(InboundIntent::OptOut(OptOutKind::Keyword))
    } else if opt_out_type.eq_ignore_ascii_case("start") {
        Some(InboundIntent::OptIn)
    } else if opt_out_type.eq_ignore_ascii_case("help") {
        Some(InboundIntent::Help)
    } else {
        None
    }
}

fn keyword_intent(normalised_body: &str) -> Option<InboundIntent> {
    // Inner spaces go so that "opt out", "opt-out" and "OPT  OUT" all read as `optout`.
    let compact: String = normalised_body.chars().filter(|c| *c != ' ').collect();
    let compact = compact.as_str();
    if OPT_OUT_KEYWORDS.contains(&compact) {
        Some(InboundIntent::OptOut(OptOutKind::Keyword))
    } else if OPT_IN_KEYWORDS.contains(&compact) {
        Some(InboundIntent::OptIn)
    } else if HELP_KEYWORDS.contains(&compact) {
        Some(InboundIntent::Help)
    } else {
        None
    }
}

/// Returns the first entry of [`PLAIN_LANGUAGE_OPT_OUTS`] found in the normalised message.
fn first_matching_pattern(normalised_body: &str) -> Option<&'static str> {
    let words: Vec<&str> = normalised_body.split(' ').filter(|word| !word.is_empty()).collect();
    PLAIN_LANGUAGE_OPT_OUTS.iter().copied().find(|pattern| pattern_matches(pattern, &words))
}

fn pattern_matches(pattern: &str, words: &[&str]) -> bool {
    let tokens: Vec<&str> = pattern.split_whitespace().collect();
    match tokens.split_first() {
        Some((&"^", rest)) => matches_prefix(rest, words),
        _ => (0..=words.len()).any(|start| matches_prefix(&tokens, &words[start..])),
    }
}

/// Returns whether `tokens` match the words at the start of `words` (not necessarily all of them).
fn matches_prefix(tokens: &[&str], words: &[&str]) -> bool {
    let Some((&token, rest)) = tokens.split_first() else {
        return true;
    };
    if token == ".." {
        let most_skipped = MAX_GAP_WORDS.min(words.len());
        return (0..=most_skipped).any(|skipped| matches_prefix(rest, &words[skipped..]));
    }
    let (alternatives, is_optional) = match token.strip_suffix('?') {
        Some(alternatives) => (alternatives, true),
        None => (token, false),
    };
    let is_matched = alternatives.split('|').any(|alternative| {
        words_consumed(alternative, words).is_some_and(|consumed| matches_prefix(rest, &words[consumed..]))
    });
    is_matched || (is_optional && matches_prefix(rest, words))
}

/// Returns how many words `alternative` matches at the start of `words`, or `None` if it doesn't.
fn words_consumed(alternative: &str, words: &[&str]) -> Option<usize> {
    if alternative == "$" {
        return words.is_empty().then_some(0);
    }
    let mut consumed = 0;
    for expected in alternative.split('_') {
        if words.get(consumed) != Some(&expected) {
            return None;
        }
        consumed += 1;
    }
    Some(consumed)
}

fn is_apostrophe(c: char) -> bool {
    matches!(c, '\'' | '`' | '\u{00B4}' | '\u{02BC}' | '\u{2018}' | '\u{2019}' | '\u{2032}' | '\u{FF07}')
}

/// Combining diacritics, so a decomposed "e\u{301}" folds like a composed "é".
fn is_combining_mark(c: char) -> bool {
    ('\u{0300}'..='\u{036F}').contains(&c)
}

/// Folds the accented Latin letters of Spanish and its neighbours to ASCII; `c` is lowercase.
fn fold_accent(c: char) -> char {
    match c {
        'à' | 'á' | 'â' | 'ã' | 'ä' | 'å' | 'ā' => 'a',
        'ç' | 'ć' | 'č' => 'c',
        'è' | 'é' | 'ê' | 'ë' | 'ē' | 'ę' => 'e',
        'ì' | 'í' | 'î' | 'ï' | 'ī' => 'i',
        'ñ' | 'ń' => 'n',
        'ò' | 'ó' | 'ô' | 'õ' | 'ö' | 'ø' | 'ō' => 'o',
        'ù' | 'ú' | 'û' | 'ü' | 'ū' => 'u',
        'ý' | 'ÿ' => 'y',
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const STOP: InboundIntent = InboundIntent::OptOut(OptOutKind::Keyword);
    const REVOKED: InboundIntent = InboundIntent::OptOut(OptOutKind::PlainLanguage);
    const OPT_IN: InboundIntent = InboundIntent::OptIn;
    const HELP: InboundIntent = InboundIntent::Help;
    const MESSAGE: InboundIntent = InboundIntent::Message;

    /// (body, OptOutType, expected)
    const CASES: &[(&str, Option<&str>, InboundIntent)] = &[
        // Twilio's OptOutType wins over the body.
        ("hello", Some("STOP"), STOP),
        ("hello", Some("stop"), STOP),
        ("hello", Some(" Stop "), STOP),
        ("STOP", Some("START"), OPT_IN),
        ("stop texting me", Some("HELP"), HELP),
        ("STOP", None, STOP),
        ("hello", Some(""), MESSAGE),
        ("STOP", Some("SOMETHING_NEW"), STOP),
        // Opt-out keywords, as the whole message, in any case, with punctuation and emoji.
        ("STOP", None, STOP),
        ("stop", None, STOP),
        ("  Stop \n", None, STOP),
        ("STOP.", None, STOP),
        ("stop!!", None, STOP),
        ("\u{1F6D1} STOP \u{1F6D1}", None, STOP),
        ("\"stop\"", None, STOP),
        ("'Stop'", None, STOP),
        ("StopAll", None, STOP),
        ("STOP ALL", None, STOP),
        ("Unsubscribe.", None, STOP),
        ("cancel", None, STOP),
        ("END", None, STOP),
        ("Quit!", None, STOP),
        ("revoke", None, STOP),
        ("optout", None, STOP),
        ("OPT-OUT", None, STOP),
        ("opt out", None, STOP),
        ("Opt   Out!", None, STOP),
        ("ALTO", None, STOP),
        ("Para.", None, STOP),
        ("parar", None, STOP),
        ("¡Basta!", None, STOP),
        ("Cancelar", None, STOP),
        ("detener", None, STOP),
        // Opt-in and help keywords.
        ("START", None, OPT_IN),
        ("start.", None, OPT_IN),
        ("Unstop", None, OPT_IN),
        ("YES", None, OPT_IN),
        ("yes!", None, OPT_IN),
        ("HELP", None, HELP),
        ("help?", None, HELP),
        ("Info", None, HELP),
        ("INFO.", None, HELP),
        // Empty and whitespace bodies.
        ("", None, MESSAGE),
        ("   ", None, MESSAGE),
        ("\n\t \r\n", None, MESSAGE),
        ("!!!", None, MESSAGE),
        // Plain-language revocations, English.
        ("stop texting me", None, REVOKED),
        ("Please stop texting", None, REVOKED),
        ("stop messaging me", None, REVOKED),
        ("stop contacting me", None, REVOKED),
        ("stop sending me messages", None, REVOKED),
        ("please remove me", None, REVOKED),
        ("remove me from your list", None, REVOKED),
        ("take me off your list", None, REVOKED),
        ("don't contact me", None, REVOKED),
        ("don\u{2019}t contact me", None, REVOKED),
        ("DON\u{2018}T CONTACT ME!", None, REVOKED),
        ("do not contact me again", None, REVOKED),
        ("dont text me", None, REVOKED),
        ("do not text this number", None, REVOKED),
        ("no more texts please", None, REVOKED),
        ("unsubscribe me", None, REVOKED),
        ("opt me out", None, REVOKED),
        ("leave me alone", None, REVOKED),
        ("lose my number", None, REVOKED),
        ("wrong number, stop", None, REVOKED),
        ("Wrong number", None, REVOKED),
        ("STOP TEXTING ME!!!", None, REVOKED),
        ("stop please", None, REVOKED),
        ("Please stop.", None, REVOKED),
        ("I want to unsubscribe", None, REVOKED),
        ("I don't want these texts", None, REVOKED),
        ("take me off the mailing list please", None, REVOKED),
        ("ok thanks, but please stop texting me about the tint", None, REVOKED),
        // Plain-language revocations, Spanish.
        ("no me envíen más", None, REVOKED),
        ("no me envie\u{301}n ma\u{301}s", None, REVOKED),
        ("no me envien mas mensajes", None, REVOKED),
        ("no me escriban", None, REVOKED),
        ("dejen de escribirme", None, REVOKED),
        ("dejen de enviarme mensajes", None, REVOKED),
        ("no quiero mas mensajes", None, REVOKED),
        ("No quiero más mensajes, gracias", None, REVOKED),
        ("no me contacten", None, REVOKED),
        ("bórrenme de su lista", None, REVOKED),
        ("denme de baja por favor", None, REVOKED),
        ("déjenme en paz", None, REVOKED),
        // Customer messages that merely contain a keyword or a near-miss phrase.
        ("can you stop by tomorrow?", None, MESSAGE),
        ("please stop by", None, MESSAGE),
        ("what time do you stop taking cars?", None, MESSAGE),
        ("Is the ceramic tint worth it?", None, MESSAGE),
        ("I want to cancel my appointment and rebook for Friday", None, MESSAGE),
        ("cancel my appointment", None, MESSAGE),
        ("end of the week works", None, MESSAGE),
        ("para cuando tienen cita?", None, MESSAGE),
        ("quit smoking lol", None, MESSAGE),
        ("don't forget my sunroof", None, MESSAGE),
        ("please text me the price", None, MESSAGE),
        ("yes please book me", None, MESSAGE),
        ("Stop sign tint?", None, MESSAGE),
        ("the tint won't stop peeling", None, MESSAGE),
        ("no thanks, maybe next month", None, MESSAGE),
        ("no thanks", None, MESSAGE),
        ("not interested", None, MESSAGE),
        ("help me choose a tint", None, MESSAGE),
        ("remove me from the wait list", None, MESSAGE),
        ("take me off the schedule for friday", None, MESSAGE),
        ("remove me from the 3pm slot please", None, MESSAGE),
        ("you guys don't contact me when it's ready, why?", None, MESSAGE),
        ("don't text me, call me instead", None, MESSAGE),
        ("is this the wrong number?", None, MESSAGE),
        ("you have the wrong number for my wife, it's 555 0100", None, MESSAGE),
        ("what time do you stop sending cars to the paint shop?", None, MESSAGE),
        ("no me envíen la factura, mejor en persona", None, MESSAGE),
        ("¿por qué no me escriben?", None, MESSAGE),
        ("sáquenme de la lista de espera", None, MESSAGE),
        ("sácame de dudas, ¿cuánto cuesta?", None, MESSAGE),
        ("para el viernes está bien", None, MESSAGE),
    ];

    #[test]
    fn classify_matches_every_case_in_the_table() {
        let failures: Vec<String> = CASES
            .iter()
            .filter(|(body, opt_out_type_opt, expected)| classify(body, *opt_out_type_opt) != *expected)
            .map(|(body, opt_out_type_opt, expected)| {
                let actual = classify(body, *opt_out_type_opt);
                let pattern_opt = first_matching_pattern(&normalise(body));
                format!("{body:?} with {opt_out_type_opt:?}: expected {expected:?}, got {actual:?} (pattern {pattern_opt:?})")
            })
            .collect();
        assert!(failures.is_empty(), "{} case(s) failed:\n{}", failures.len(), failures.join("\n"));
    }

    #[test]
    fn normalise_folds_case_accents_apostrophes_and_punctuation() {
        let cases = [
            ("", ""),
            ("  \t\n ", ""),
            ("STOP.", "stop"),
            ("  Stop!! ", "stop"),
            ("\u{1F6D1}stop\u{1F6D1}", "stop"),
            ("Opt-Out", "opt out"),
            ("opt    out", "opt out"),
            ("don't", "dont"),
            ("don\u{2019}t", "dont"),
            ("don\u{2018}t", "dont"),
            ("dont", "dont"),
            ("No me envíen MÁS", "no me envien mas"),
            ("no me envie\u{301}n", "no me envien"),
            ("¿Bórrenme de su lista?", "borrenme de su lista"),
            ("wrong number, stop", "wrong number stop"),
            ("call 555-0100", "call 555 0100"),
        ];
        for (input, expected) in cases {
            assert_eq!(normalise(input), expected, "normalise({input:?})");
        }
    }

    #[test]
    fn every_pattern_is_written_in_normalised_form() {
        for pattern in PLAIN_LANGUAGE_OPT_OUTS {
            let tokens: Vec<&str> = pattern.split(' ').collect();
            let last = tokens.len() - 1;
            assert!(tokens.iter().any(|token| !matches!(*token, "^" | "..")), "{pattern:?} has no words");
            for (index, token) in tokens.iter().enumerate() {
                match *token {
                    "^" => assert_eq!(index, 0, "{pattern:?}: `^` must come first"),
                    ".." => assert!(0 < index && index < last, "{pattern:?}: a gap at either end does nothing"),
                    _ => {
                        let alternatives = token.strip_suffix('?').unwrap_or(token);
                        for alternative in alternatives.split('|') {
                            if alternative == "$" {
                                assert_eq!(index, last, "{pattern:?}: `$` must be in the last token");
                                continue;
                            }
                            for word in alternative.split('_') {
                                assert!(!word.is_empty(), "{pattern:?}: empty word in {token:?}");
                                assert_eq!(normalise(word), word, "{pattern:?}: {word:?} is not normalised");
                            }
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn every_keyword_is_written_in_compact_normalised_form() {
        for keyword in OPT_OUT_KEYWORDS.iter().chain(OPT_IN_KEYWORDS).chain(HELP_KEYWORDS) {
            assert_eq!(normalise(keyword), *keyword, "{keyword:?} is not normalised");
            assert!(!keyword.contains(' '), "{keyword:?} must be written without spaces");
        }
    }

    proptest! {
        #[test]
        fn classify_never_panics(body in any::<String>(), opt_out_type_opt in proptest::option::of(any::<String>())) {
            let _intent = classify(&body, opt_out_type_opt.as_deref());
        }

        #[test]
        fn classify_never_panics_on_phrase_like_input(body in "((stop|dont|do not|no|me|remove|from|the|list|wrong|number|please|\\^|\\$|\\.\\.|_|[!?' ]) ){0,40}") {
            let _intent = classify(&body, None);
        }

        #[test]
        fn normalise_is_idempotent(text in any::<String>()) {
            let once = normalise(&text);
            prop_assert_eq!(normalise(&once), once);
        }
    }
}
