//! `X-Twilio-Signature`: how Twilio signs the webhooks it sends us (status callbacks, inbound
//! SMS), exactly as reference §2.5 and Twilio's own `RequestValidator` do it. The inbound webhook
//! handler validates with it; the fake (`sim::twilio`) signs with it, so both sides agree.
//!
//! `signature = base64(HMAC-SHA1(auth token, url + for each sorted name: name + value...))`.
//! For a form POST the parameters are the POST body's; for a GET they are already in the URL, so
//! pass none. Bodies signed through `bodySHA256` (JSON webhooks of newer products) are the
//! caller's concern: check the hash, then validate the URL with no parameters.
//!
//! Rebuild `url` from configuration (scheme, host, path and query exactly as configured in
//! Twilio), not from the local socket, when running behind a proxy.

use std::collections::{BTreeMap, BTreeSet};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use sha1::Sha1;

/// Returns the base64 `X-Twilio-Signature` Twilio would send for this URL and POST parameters.
///
/// Parameter names are sorted bytewise; the values of a repeated name are de-duplicated and
/// sorted, and each is appended as `name + value`.
pub fn compute(auth_token: &str, url: &str, params: &[(String, String)]) -> String {
    STANDARD.encode(mac(auth_token, url, params).finalize().into_bytes())
}

/// Returns true when `header` is the signature of this URL and these POST parameters, checked
/// in constant time.
///
/// Port quirk (§2.5.6): the URL is tried both with its port removed and with the scheme's default
/// port added, because Twilio may have signed either form; one match is enough.
pub fn validate(auth_token: &str, url: &str, params: &[(String, String)], header: &str) -> bool {
    let Ok(tag) = STANDARD.decode(header.trim()) else {
        return false;
    };
    let with_port = url_with_default_port(url);
    let without_port = url_without_port(url);
    // Both are computed and compared so the time taken does not depend on which one matches.
    let with_port_matches = mac(auth_token, &with_port, params).verify_slice(&tag).is_ok();
    let without_port_matches = mac(auth_token, &without_port, params).verify_slice(&tag).is_ok();
    with_port_matches | without_port_matches
}

fn mac(auth_token: &str, url: &str, params: &[(String, String)]) -> Hmac<Sha1> {
    let mut mac = Hmac::<Sha1>::new_from_slice(auth_token.as_bytes()).expect("hmac takes any key length");
    mac.update(url.as_bytes());
    // BTreeMap and BTreeSet order `String`s bytewise, which is Twilio's sort order, and the set
    // drops repeated values of a name.
    let mut values_by_name: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for (name, value) in params {
        values_by_name.entry(name.as_str()).or_default().insert(value.as_str());
    }
    for (name, values) in &values_by_name {
        for value in values {
            mac.update(name.as_bytes());
            mac.update(value.as_bytes());
        }
    }
    mac
}

/// Where the authority (`user@host:port`) of an absolute URL starts and ends, as byte offsets.
fn authority_span(url: &str) -> Option<(usize, usize)> {
    let start = url.find("://")? + 3;
    let end = url[start..].find(['/', '?', '#']).map_or(url.len(), |offset| start + offset);
    Some((start, end))
}

/// Returns the byte offset of the `:` before the port in the authority, if a port is given.
fn port_colon(url: &str, start: usize, end: usize) -> Option<usize> {
    let authority = &url[start..end];
    // Userinfo may hold a `:` of its own; the host starts after the last `@`.
    let host_start = authority.rfind('@').map_or(0, |at| at + 1);
    let host_port = &authority[host_start..];
    let colon = host_port.rfind(':')?;
    let port = &host_port[colon + 1..];
    // An IPv6 literal's colons are inside the brackets; a port comes after the `]`.
    let after_brackets = host_port.rfind(']').is_none_or(|bracket| bracket < colon);
    let is_port = after_brackets && !port.is_empty() && port.bytes().all(|byte| byte.is_ascii_digit());
    is_port.then_some(start + host_start + colon)
}

/// Returns the URL with `:443` (https) or `:80` (anything else) added when it names no port;
/// a URL that has a port is returned unchanged.
fn url_with_default_port(url: &str) -> String {
    let Some((start, end)) = authority_span(url) else {
        return url.to_owned();
    };
    if port_colon(url, start, end).is_some() {
        return url.to_owned();
    }
    let default_port = if url[..start].eq_ignore_ascii_case("https://") { ":443" } else { ":80" };
    format!("{}{default_port}{}", &url[..end], &url[end..])
}

/// Returns the URL with its port removed; a URL without a port is returned unchanged.
fn url_without_port(url: &str) -> String {
    let Some((start, end)) = authority_span(url) else {
        return url.to_owned();
    };
    match port_colon(url, start, end) {
        Some(colon) => format!("{}{}", &url[..colon], &url[end..]),
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN: &str = "12345";
    const URL: &str = "https://mycompany.com/myapp.php?foo=1&bar=2";
    const EXPECTED: &str = "RSOYDt4T1cUTdK1PDd93/VVr8B8=";

    fn params(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(name, value)| ((*name).to_owned(), (*value).to_owned())).collect()
    }

    fn reference_params() -> Vec<(String, String)> {
        params(&[
            ("CallSid", "CA1234567890ABCDE"),
            ("Caller", "+14158675309"),
            ("Digits", "1234"),
            ("From", "+14158675309"),
            ("To", "+18005551212"),
        ])
    }

    #[test]
    fn compute_matches_twilios_known_answer() {
        assert_eq!(compute(TOKEN, URL, &reference_params()), EXPECTED);
    }

    #[test]
    fn validate_accepts_twilios_known_answer() {
        assert!(validate(TOKEN, URL, &reference_params(), EXPECTED));
    }

    #[test]
    fn parameter_order_does_not_change_the_signature() {
        let mut reversed = reference_params();
        reversed.reverse();

        assert_eq!(compute(TOKEN, URL, &reversed), EXPECTED);
        assert!(validate(TOKEN, URL, &reversed, EXPECTED));
    }

    #[test]
    fn repeated_names_sign_their_values_deduplicated_and_sorted() {
        let repeated = params(&[("MediaUrl", "b"), ("Body", "hi"), ("MediaUrl", "a"), ("MediaUrl", "b")]);
        let sorted_once = params(&[("Body", "hi"), ("MediaUrl", "a"), ("MediaUrl", "b")]);

        let mut mac = Hmac::<Sha1>::new_from_slice(TOKEN.as_bytes()).expect("hmac key");
        mac.update(format!("{URL}BodyhiMediaUrlaMediaUrlb").as_bytes());
        let by_hand = STANDARD.encode(mac.finalize().into_bytes());

        assert_eq!(compute(TOKEN, URL, &repeated), by_hand);
        assert_eq!(compute(TOKEN, URL, &sorted_once), by_hand);
    }

    #[test]
    fn signature_of_the_url_without_port_validates_with_the_default_port_added_and_back() {
        let with_port = "https://mycompany.com:443/myapp.php?foo=1&bar=2";
        let signed_with_port = compute(TOKEN, with_port, &reference_params());

        assert!(validate(TOKEN, URL, &reference_params(), EXPECTED));
        assert!(validate(TOKEN, with_port, &reference_params(), EXPECTED));
        assert!(validate(TOKEN, URL, &reference_params(), &signed_with_port));
        assert!(validate(TOKEN, with_port, &reference_params(), &signed_with_port));
    }

    #[test]
    fn non_default_port_is_kept_and_also_tried_without() {
        let local = "http://127.0.0.1:8080/webhooks/twilio/status";
        let signed = compute(TOKEN, local, &reference_params());
        let signed_without_port = compute(TOKEN, "http://127.0.0.1/webhooks/twilio/status", &reference_params());

        assert!(validate(TOKEN, local, &reference_params(), &signed));
        assert!(validate(TOKEN, local, &reference_params(), &signed_without_port));
        assert!(!validate(TOKEN, "http://127.0.0.1:9090/webhooks/twilio/status", &reference_params(), &signed));
    }

    #[test]
    fn port_helpers_handle_userinfo_ipv6_and_missing_paths() {
        assert_eq!(url_with_default_port("http://example.com"), "http://example.com:80");
        assert_eq!(url_with_default_port("https://user:pw@example.com/a?b=1"), "https://user:pw@example.com:443/a?b=1");
        assert_eq!(url_without_port("https://user:pw@example.com:8443/a"), "https://user:pw@example.com/a");
        assert_eq!(url_with_default_port("http://[::1]/x"), "http://[::1]:80/x");
        assert_eq!(url_without_port("http://[::1]:3000/x"), "http://[::1]/x");
        assert_eq!(url_without_port("https://example.com/a:1"), "https://example.com/a:1");
        assert_eq!(url_with_default_port("not a url"), "not a url");
    }

    #[test]
    fn tampering_with_a_value_the_url_or_the_token_fails() {
        let mut changed_value = reference_params();
        changed_value[2].1 = "1235".to_owned();
        let mut added_param = reference_params();
        added_param.push(("Extra".to_owned(), "1".to_owned()));

        assert!(!validate(TOKEN, URL, &changed_value, EXPECTED));
        assert!(!validate(TOKEN, URL, &added_param, EXPECTED));
        assert!(!validate(TOKEN, "https://mycompany.com/myapp.php?foo=1&bar=3", &reference_params(), EXPECTED));
        assert!(!validate("54321", URL, &reference_params(), EXPECTED));
    }

    #[test]
    fn malformed_or_empty_header_fails() {
        assert!(!validate(TOKEN, URL, &reference_params(), ""));
        assert!(!validate(TOKEN, URL, &reference_params(), "not base64!"));
        assert!(!validate(TOKEN, URL, &reference_params(), "RSOYDt4T1cUTdK1PDd93"));
    }
}
