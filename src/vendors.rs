//! Which SMS and email providers the process talks to: the real Twilio and SendGrid when their
//! credentials are set; otherwise, only when asked (`--sim`, the demo), the local fakes started
//! in this process — announced at start, because production must never silently text nobody.

use std::sync::Arc;

use leadorch_actors::ports::{EmailSender, SmsSender};
use secrecy::{ExposeSecret, SecretString};

use crate::config::Settings;
use crate::messaging::sendgrid::{SendGridConfig, SendGridEmail};
use crate::messaging::twilio::{TwilioConfig, TwilioSms};
use crate::sim::sendgrid::{SendGridSim, SendGridSimConfig};
use crate::sim::twilio::{TwilioSim, TwilioSimConfig};

/// Whether missing vendor credentials are an error or a reason to start a local fake.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VendorMode {
    /// Every vendor needs its credentials (`leadorch serve`).
    Strict,
    /// Vendors without credentials run against in-process fakes (`serve --sim`, `demo`).
    SimWhereMissing,
}

/// Why the vendors could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum VendorError {
    #[error("{0} are not set; set them, or pass --sim to run against local fakes")]
    MissingCredentials(&'static str),
    #[error("failed to start the local {0} fake")]
    Sim(&'static str, #[source] std::io::Error),
    #[error("failed to build the {0} client: {1}")]
    Client(&'static str, String),
}

/// The providers in use, and the fakes kept alive for them.
#[derive(Debug)]
pub struct Vendors {
    pub sms: Arc<dyn SmsSender>,
    pub email: Arc<dyn EmailSender>,
    /// The SendGrid event-webhook verification key (the fake's, when SendGrid is simulated).
    pub sendgrid_verification_key_opt: Option<String>,
    pub twilio_sim_opt: Option<TwilioSim>,
    pub sendgrid_sim_opt: Option<SendGridSim>,
    /// The Twilio auth token in use (to validate its webhooks).
    pub twilio_auth_token: SecretString,
}

/// Sets up the SMS and email providers.
///
/// # Errors
/// Missing credentials in strict mode, or a fake that cannot start.
pub async fn build_vendors(settings: &Settings, mode: VendorMode) -> Result<Vendors, VendorError> {
    let secrets = &settings.secrets;
    let (twilio_config, twilio_sim_opt) = match (&secrets.twilio_account_sid_opt, &secrets.twilio_auth_token_opt) {
        (Some(sid), Some(token)) => {
            let mut config = TwilioConfig::new(sid.expose_secret(), token.clone());
            config.base_url = settings.twilio_base_url.clone();
            (config, None)
        }
        _ if mode == VendorMode::SimWhereMissing => {
            let sid = format!("AC{}", uuid::Uuid::new_v4().simple());
            let token = uuid::Uuid::new_v4().simple().to_string();
            let sim = TwilioSim::start(TwilioSimConfig { account_sid: sid.clone(), auth_token: token.clone() })
                .await
                .map_err(|e| VendorError::Sim("twilio", e))?;
            tracing::warn!(base_url = %sim.base_url(), "twilio credentials not set: texting a local fake");
            let mut config = TwilioConfig::new(sid, SecretString::from(token));
            config.base_url = sim.base_url();
            (config, Some(sim))
        }
        _ => return Err(VendorError::MissingCredentials("LEADORCH_TWILIO_ACCOUNT_SID and LEADORCH_TWILIO_AUTH_TOKEN")),
    };
    let (sendgrid_config, sendgrid_sim_opt) = match &secrets.sendgrid_api_key_opt {
        Some(key) => {
            let mut config = SendGridConfig::new(key.clone());
            config.base_url = settings.sendgrid_base_url.clone();
            (config, None)
        }
        None if mode == VendorMode::SimWhereMissing => {
            let key = format!("SG.{}", uuid::Uuid::new_v4().simple());
            let sim = SendGridSim::start(SendGridSimConfig { api_key: key.clone() })
                .await
                .map_err(|e| VendorError::Sim("sendgrid", e))?;
            tracing::warn!(base_url = %sim.base_url(), "sendgrid key not set: emailing a local fake");
            let mut config = SendGridConfig::new(SecretString::from(key));
            config.base_url = sim.base_url();
            (config, Some(sim))
        }
        None => return Err(VendorError::MissingCredentials("LEADORCH_SENDGRID_API_KEY")),
    };
    // One retry layer for sends: the lead actor's, recorded on the touchpoint row with its
    // back-off. A client-side retry would hide attempts from the row and from staff.
    let mut twilio_config = twilio_config;
    twilio_config.max_retries = 0;
    let mut sendgrid_config = sendgrid_config;
    sendgrid_config.max_retries = 0;
    let twilio_auth_token = twilio_config.auth_token.clone();
    let sms = TwilioSms::new(twilio_config).map_err(|e| VendorError::Client("twilio", e.to_string()))?;
    let email = SendGridEmail::new(sendgrid_config).map_err(|e| VendorError::Client("sendgrid", e.to_string()))?;
    Ok(Vendors {
        sms: Arc::new(sms),
        email: Arc::new(email),
        sendgrid_verification_key_opt: sendgrid_sim_opt
            .as_ref()
            .map(SendGridSim::public_key_base64)
            .or_else(|| settings.secrets.sendgrid_verification_key_opt.clone()),
        twilio_sim_opt,
        sendgrid_sim_opt,
        twilio_auth_token,
    })
}
