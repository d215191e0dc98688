//! Message templates (`config/templates.toml`, minijinja): SMS bodies and email subject/text/
//! HTML, rendered per lead with the chat link. HTML is auto-escaped; SMS must fit two segments
//! even with long names, which is checked when the templates are loaded.

use std::collections::BTreeMap;

use jiff::Timestamp;
use leadorch_actors::domain::{Lead, Location};
use leadorch_actors::ports::{RenderedEmail, TouchRenderer};
use minijinja::{AutoEscape, Environment};
use serde::Deserialize;

use crate::links::LinkSigner;

/// The templates shipped with the binary; a `templates.toml` in the config dir replaces them.
pub const DEFAULT_TEMPLATES: &str = include_str!("../config/templates.toml");

/// Longest field values substituted into SMS (longer ones are cut), so the length check at
/// load time holds for every lead.
const MAX_FIRST_NAME: usize = 20;
const MAX_VEHICLE: usize = 40;
const MAX_LOCATION_NAME: usize = 40;
/// Segments an SMS may take.
const MAX_SMS_SEGMENTS: usize = 2;

/// Why the templates cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    #[error("templates.toml: {0}")]
    Parse(String),
    #[error("template `{name}`: {message}")]
    Invalid { name: String, message: String },
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTemplates {
    #[serde(default)]
    sms: BTreeMap<String, RawSms>,
    #[serde(default)]
    email: BTreeMap<String, RawEmail>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSms {
    body: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEmail {
    subject: String,
    text: String,
    html: String,
}

/// Returns how many SMS segments `body` takes.
pub fn sms_segments(body: &str) -> usize {
    const GSM: &str = "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà";
    let is_gsm = body.chars().all(|c| GSM.contains(c) || "^{}\\[~]|€".contains(c));
    if is_gsm {
        let units: usize = body.chars().map(|c| if "^{}\\[~]|€".contains(c) { 2 } else { 1 }).sum();
        if units <= 160 { 1 } else { units.div_ceil(153) }
    } else {
        let units = body.encode_utf16().count();
        if units <= 70 { 1 } else { units.div_ceil(67) }
    }
}

fn cut(value: &str, max: usize) -> String {
    value.chars().take(max).collect::<String>().trim_end().to_owned()
}

/// Renders touches; holds the parsed templates and the link signer.
#[derive(Debug)]
pub struct Templates {
    env: Environment<'static>,
    links: LinkSigner,
}

impl Templates {
    /// Parses and checks the templates.
    ///
    /// # Errors
    /// Bad TOML, a template that does not compile, or an SMS that can exceed two segments.
    pub fn new(source: &str, links: LinkSigner) -> Result<Templates, TemplateError> {
        let raw: RawTemplates = toml::from_str(source).map_err(|e| TemplateError::Parse(e.to_string()))?;
        let mut env = Environment::new();
        env.set_auto_escape_callback(|name| if name.ends_with(".html") { AutoEscape::Html } else { AutoEscape::None });
        let invalid =
            |name: &str, e: minijinja::Error| TemplateError::Invalid { name: name.to_owned(), message: e.to_string() };
        for (name, sms) in raw.sms {
            env.add_template_owned(format!("{name}.sms"), sms.body).map_err(|e| invalid(&name, e))?;
        }
        for (name, email) in raw.email {
            env.add_template_owned(format!("{name}.subject"), email.subject).map_err(|e| invalid(&name, e))?;
            env.add_template_owned(format!("{name}.text"), email.text).map_err(|e| invalid(&name, e))?;
            env.add_template_owned(format!("{name}.html"), email.html).map_err(|e| invalid(&name, e))?;
        }
        let templates = Templates { env, links };
        templates.check_sms_lengths()?;
        Ok(templates)
    }

    fn check_sms_lengths(&self) -> Result<(), TemplateError> {
        let worst = minijinja::context! {
            first_name => "W".repeat(MAX_FIRST_NAME),
            vehicle => "W".repeat(MAX_VEHICLE),
            location_name => "W".repeat(MAX_LOCATION_NAME),
            location_phone => "(555) 555-5555",
            chat_link => format!("{}/c/{}", self.links_base(), "W".repeat(64)),
            service => "W".repeat(40),
        };
        for (name, template) in self.env.templates() {
            let Some(short) = name.strip_suffix(".sms") else { continue };
            let body = template
                .render(&worst)
                .map_err(|e| TemplateError::Invalid { name: short.to_owned(), message: e.to_string() })?;
            let segments = sms_segments(&body);
            if segments > MAX_SMS_SEGMENTS {
                return Err(TemplateError::Invalid {
                    name: short.to_owned(),
                    message: format!(
                        "takes {segments} sms segments with long names; at most {MAX_SMS_SEGMENTS} are allowed"
                    ),
                });
            }
        }
        Ok(())
    }

    fn links_base(&self) -> String {
        self.links
            .link(leadorch_actors::domain::TenantId::new(), leadorch_actors::domain::LeadId::new(), Timestamp::now())
            .rsplit_once("/c/")
            .map(|(base, _)| base.to_owned())
            .unwrap_or_default()
    }

    fn context(&self, lead: &Lead, location: &Location, issued_at: Timestamp) -> minijinja::Value {
        let phone = location
            .phone_opt
            .as_ref()
            .or(location.sms_from_opt.as_ref())
            .map(|p| national(p.as_str()))
            .unwrap_or_default();
        minijinja::context! {
            first_name => cut(lead.first_name_opt.as_deref().filter(|n| !n.trim().is_empty()).unwrap_or("there"), MAX_FIRST_NAME),
            vehicle => cut(&lead.vehicle_opt.as_ref().and_then(|v| v.describe()).unwrap_or_else(|| "vehicle".to_owned()), MAX_VEHICLE),
            location_name => cut(&location.name, MAX_LOCATION_NAME),
            location_phone => phone,
            chat_link => self.links.link(lead.tenant_id, lead.id, issued_at),
            service => lead.requested_services.first().cloned().unwrap_or_default(),
        }
    }

    fn render(&self, name: &str, context: &minijinja::Value) -> Result<String, String> {
        let template = self.env.get_template(name).map_err(|_| format!("no template `{name}`"))?;
        template.render(context).map_err(|e| e.to_string())
    }
}

/// "+15125550100" -> "(512) 555-0100"; other numbers stay E.164.
fn national(e164: &str) -> String {
    match e164.strip_prefix("+1") {
        Some(d) if d.len() == 10 => format!("({}) {}-{}", &d[..3], &d[3..6], &d[6..]),
        _ => e164.to_owned(),
    }
}

impl TouchRenderer for Templates {
    fn render_sms(
        &self,
        template: &str,
        lead: &Lead,
        location: &Location,
        issued_at: Timestamp,
    ) -> Result<String, String> {
        self.render(&format!("{template}.sms"), &self.context(lead, location, issued_at))
    }

    fn render_email(
        &self,
        template: &str,
        lead: &Lead,
        location: &Location,
        issued_at: Timestamp,
    ) -> Result<RenderedEmail, String> {
        let context = self.context(lead, location, issued_at);
        Ok(RenderedEmail {
            subject: self.render(&format!("{template}.subject"), &context)?.trim().to_owned(),
            text: self.render(&format!("{template}.text"), &context)?,
            html: self.render(&format!("{template}.html"), &context)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use jiff::SignedDuration;
    use leadorch_actors::domain::{LeadStatus, LocationId, Phone, TenantId, TimeZoneName, Vehicle};
    use secrecy::SecretString;

    use super::*;

    fn links() -> LinkSigner {
        LinkSigner::new(&SecretString::from("k"), "https://leads.example.com", SignedDuration::from_hours(336))
    }

    fn location() -> Location {
        Location {
            id: LocationId::new(),
            tenant_id: TenantId::new(),
            crm_location_id: "loc".into(),
            name: "Tint Co Austin".into(),
            address_opt: None,
            phone_opt: Some(Phone::parse("5125550100").expect("phone")),
            timezone: TimeZoneName::parse("America/Chicago").expect("tz"),
            sms_from_opt: None,
            sms_rate_per_sec: 1.0,
            email_from_opt: None,
            active: true,
            created_at: Timestamp::now(),
        }
    }

    fn lead(first_name: &str, location: &Location) -> Lead {
        Lead {
            id: leadorch_actors::domain::LeadId::new(),
            tenant_id: location.tenant_id,
            location_id: location.id,
            crm_source: "shopmonkey".into(),
            crm_order_id: "o".into(),
            crm_customer_id_opt: None,
            status: LeadStatus::InCadence,
            first_name_opt: Some(first_name.into()),
            last_name_opt: None,
            phone_opt: None,
            email_opt: None,
            vehicle_opt: Some(Vehicle {
                year: Some(2021),
                make: Some("Toyota".into()),
                model: Some("Camry".into()),
                submodel: None,
            }),
            requested_services: vec![],
            cadence_name_opt: None,
            cadence_version_opt: None,
            received_at: Timestamp::now(),
            first_touch_at_opt: None,
            created_at: Timestamp::now(),
            updated_at: Timestamp::now(),
        }
    }

    #[test]
    fn the_shipped_templates_load_and_the_first_sms_names_the_customer_vehicle_and_link() {
        let templates = Templates::new(DEFAULT_TEMPLATES, links()).expect("shipped templates are valid");
        let location = location();
        let lead = lead("Pat", &location);

        let body = templates.render_sms("first_sms", &lead, &location, Timestamp::now()).expect("renders");

        assert!(body.contains("Hi Pat"), "{body}");
        assert!(body.contains("2021 Toyota Camry"), "{body}");
        assert!(body.contains("https://leads.example.com/c/"), "{body}");
        assert!(sms_segments(&body) <= 2);
        let token = body.split("/c/").nth(1).and_then(|rest| rest.split_whitespace().next()).expect("token");
        let claims = links().verify(token, Timestamp::now()).expect("the link verifies");
        assert_eq!(claims.lead_id, lead.id);
    }

    #[test]
    fn customer_text_is_escaped_in_html_but_not_in_plain_text() {
        let templates = Templates::new(DEFAULT_TEMPLATES, links()).expect("valid");
        let location = location();
        let lead = lead("<script>x</script>", &location);

        let email = templates.render_email("first_email", &lead, &location, Timestamp::now()).expect("renders");

        assert!(!email.html.contains("<script>"), "{}", email.html);
        assert!(email.html.contains("&lt;script&gt;"), "{}", email.html);
        assert!(email.subject.contains("Tint Co Austin"));
        assert!(email.text.contains("(512) 555-0100"));
    }

    #[test]
    fn an_sms_template_that_can_exceed_two_segments_is_refused_at_load() {
        let long = format!("[sms.long]\nbody = \"{} {{{{ first_name }}}}\"\n", "x".repeat(290));

        let err = Templates::new(&long, links()).expect_err("too long");

        assert!(err.to_string().contains("long"), "{err}");
        assert!(err.to_string().contains("segments"), "{err}");
    }

    #[test]
    fn segments_follow_gsm_and_ucs2_limits() {
        assert_eq!(sms_segments(&"a".repeat(160)), 1);
        assert_eq!(sms_segments(&"a".repeat(161)), 2);
        assert_eq!(sms_segments(&"a".repeat(306)), 2);
        assert_eq!(sms_segments(&"é".repeat(160)), 1);
        assert_eq!(sms_segments(&"✓".repeat(70)), 1);
        assert_eq!(sms_segments(&"✓".repeat(71)), 2);
    }
}
