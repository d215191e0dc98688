//! The `leadorch` command line: each arm is a few lines into the library.

use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use leadorch::config::Settings;
use leadorch::crm::keys::SecretBox;
use leadorch::demo::{self, DemoOptions};
use leadorch::loadgen::{self, LoadgenOptions};
use leadorch::ops::{self, LocationInput};
use leadorch::startup::{self, Application};
use leadorch::store::Store;
use leadorch::telemetry;
use leadorch::vendors::VendorMode;
use leadorch_actors::domain::{LocationId, TenantId};
use serde::Serialize;

// glibc's allocator spent a fifth of the request path's CPU in malloc/free under many threads
// (perf, 8,000 webhooks/s); mimalloc's thread-local free lists take most of that away.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Answers every new lead of an auto-service franchise within seconds, and follows up.
#[derive(Debug, Parser)]
#[command(name = "leadorch", version, about)]
struct Cli {
    /// Configuration profile: loads config/{profile}.toml over config/default.toml.
    #[arg(long, global = true, env = "LEADORCH_PROFILE")]
    profile: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Runs the service: HTTP API, webhooks and the actor system.
    Serve(ServeArgs),
    /// Runs the offline demo: the service plus a simulated ShopMonkey that sends a new estimate
    /// every few seconds; prints each lead's chat link. Uses the `demo` profile unless --profile
    /// says otherwise.
    Demo(DemoArgs),
    /// Creates the database if missing and applies pending migrations.
    Migrate,
    /// Manages tenants (franchisors).
    #[command(subcommand)]
    Tenant(TenantCommand),
    /// Manages locations (shops).
    #[command(subcommand)]
    Location(LocationCommand),
    /// Manages staff API keys.
    #[command(subcommand)]
    Apikey(ApiKeyCommand),
    /// Load test: runs the service in process against a local ShopMonkey fake, sends it signed
    /// order webhooks at --rate for --duration-secs over loopback HTTP, and prints one JSON
    /// summary (accepted, errors, speed-to-lead, scheduler lag, RSS) on stdout. Creates a
    /// tenant "Loadgen <time>" in the configured database. With --chat-streams N it skips the
    /// webhooks and instead opens N customer chat streams at once over a fake Anthropic API,
    /// sends one message on each, and prints the chat summary (connected, replies completed,
    /// relay latency percentiles: what the server adds between the model emitting a delta and
    /// the customer receiving it).
    Loadgen(LoadgenArgs),
    /// Exits 0 when the service at --url answers /readyz with 200 (for container healthchecks).
    Healthcheck {
        #[arg(long, default_value = "http://127.0.0.1:3000")]
        url: String,
    },
}

#[derive(Debug, Args)]
struct ServeArgs {
    /// Listen address; overrides LEADORCH_HTTP_ADDR.
    #[arg(long)]
    addr: Option<std::net::SocketAddr>,
    /// Run vendors whose credentials are unset (Twilio, SendGrid) against local fakes, announced
    /// at start. Without it, missing credentials stop start-up.
    #[arg(long)]
    sim: bool,
}

#[derive(Debug, Args)]
struct DemoArgs {
    /// Listen address (default: http.addr, 127.0.0.1:3000); port 0 picks a free port. Links
    /// point here unless LEADORCH_PUBLIC_URL is set.
    #[arg(long)]
    addr: Option<std::net::SocketAddr>,
    /// Shops of the simulated franchise.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u16).range(1..=50))]
    locations: u16,
    /// Seconds between two new estimates.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u64).range(1..=3600))]
    every_secs: u64,
}

#[derive(Debug, Args)]
struct LoadgenArgs {
    /// Webhooks per second (0: no webhook phase, e.g. with --pending).
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(0..=100_000))]
    rate: u32,
    /// Seconds of sending; it stops then, whatever is left.
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(0..=3600))]
    duration_secs: u64,
    /// Webhook requests in flight at most.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u16).range(1..=4096))]
    concurrency: u16,
    /// Shops of the simulated franchise (locations of the tenant).
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u16).range(1..=5000))]
    locations: u16,
    /// Scale test: leads with a pending touch to insert before the service starts.
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u64).range(0..=20_000_000))]
    pending: u64,
    /// Of the --pending touches, how many fall due 20-40 s after seeding.
    #[arg(long, default_value_t = 1000)]
    pending_due: u64,
    /// Chat mode: customer chat streams (SSE) to open at once, one message each, measuring the
    /// relay latency of the replies; replaces the webhook phase and its summary (0: off). Leads
    /// are spread over --locations shops (at most N).
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u16).range(0..=5000))]
    chat_streams: u16,
    /// Chat mode: words of the fake model's reply (streamed two words to a delta).
    #[arg(long, default_value_t = 40, value_parser = clap::value_parser!(u16).range(1..=4000))]
    chat_reply_words: u16,
    /// Chat mode: milliseconds the fake model waits before each delta.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u64).range(0..=10_000))]
    chat_delta_ms: u64,
}

#[derive(Debug, Args)]
struct JsonFlag {
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Subcommand)]
enum TenantCommand {
    /// Creates a tenant and prints it with its webhook secret.
    Add {
        #[arg(long)]
        name: String,
        /// Secret the CRM signs webhooks with; generated when omitted.
        #[arg(long)]
        webhook_secret: Option<String>,
        #[command(flatten)]
        output: JsonFlag,
    },
    /// Lists tenants.
    List {
        #[command(flatten)]
        output: JsonFlag,
    },
    /// Stores the tenant's ShopMonkey API key, encrypted with LEADORCH_SECRET_KEY. The key is
    /// read from standard input unless --key is given (keeps it out of shell history).
    SetCrmKey {
        #[arg(long)]
        tenant: TenantId,
        #[arg(long)]
        key: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
enum LocationCommand {
    /// Creates a location of a tenant.
    Add {
        #[arg(long)]
        tenant: TenantId,
        #[arg(long)]
        crm_location_id: String,
        #[arg(long)]
        name: String,
        /// IANA time zone, e.g. America/Chicago.
        #[arg(long)]
        timezone: String,
        #[arg(long)]
        address: Option<String>,
        /// The shop's phone, shown to customers.
        #[arg(long)]
        phone: Option<String>,
        /// The Twilio number the location texts from (E.164).
        #[arg(long)]
        sms_from: Option<String>,
        /// SMS per second the number may send.
        #[arg(long, default_value_t = 1.0)]
        sms_rate: f64,
        #[arg(long)]
        email_from: Option<String>,
        #[command(flatten)]
        output: JsonFlag,
    },
    /// Lists a tenant's locations.
    List {
        #[arg(long)]
        tenant: TenantId,
        #[command(flatten)]
        output: JsonFlag,
    },
    /// Imports the tenant's locations from ShopMonkey (name, address, phone, time zone).
    Sync {
        #[arg(long)]
        tenant: TenantId,
        /// Time zone for CRM locations that have none.
        #[arg(long)]
        default_timezone: Option<String>,
        #[command(flatten)]
        output: JsonFlag,
    },
    /// Replaces a location's weekly opening hours.
    Hours {
        #[arg(long)]
        location: LocationId,
        /// Optional: the owning tenant (looked up when omitted).
        #[arg(long)]
        tenant: Option<TenantId>,
        /// e.g. "mon-fri 08:00-18:00, sat 09:00-14:00"
        #[arg(long)]
        set: String,
        #[command(flatten)]
        output: JsonFlag,
    },
}

#[derive(Debug, Subcommand)]
enum ApiKeyCommand {
    /// Creates a staff API key; it is printed once and only its hash is stored.
    Add {
        #[arg(long)]
        tenant: TenantId,
        #[arg(long)]
        name: String,
        #[command(flatten)]
        output: JsonFlag,
    },
}

fn print_record<T: Serialize>(json: bool, record: &T, human: impl FnOnce(&T) -> String) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(record).context("failed to render json")?);
    } else {
        println!("{}", human(record));
    }
    Ok(())
}

async fn operator_store(settings: &Settings) -> anyhow::Result<Store> {
    startup::prepare_database(settings).await?;
    Store::new(&settings.database).context("failed to build the database pool")
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let profile_opt = match (&cli.command, cli.profile.as_deref()) {
        (Command::Demo(_), None) => Some("demo"),
        (_, profile_opt) => profile_opt,
    };
    let mut settings = Settings::from_process(profile_opt).context("invalid configuration")?;
    match &cli.command {
        // Its stdout carries only the JSON summary.
        Command::Loadgen(_) => loadgen::init_logs(&settings.log),
        _ => telemetry::init(&settings.log),
    }
    match cli.command {
        Command::Serve(args) => {
            if let Some(addr) = args.addr {
                settings.http.addr = addr;
            }
            let mode = if args.sim { VendorMode::SimWhereMissing } else { VendorMode::Strict };
            let app = Application::build_with(settings, mode).await?;
            app.run_until_stopped(startup::shutdown_signal()).await
        }
        Command::Demo(args) => {
            let options = DemoOptions {
                addr_opt: args.addr,
                locations: usize::from(args.locations),
                every: std::time::Duration::from_secs(args.every_secs),
            };
            demo::run(settings, options).await
        }
        Command::Loadgen(args) => {
            let options = LoadgenOptions {
                rate: args.rate,
                duration: std::time::Duration::from_secs(args.duration_secs),
                concurrency: usize::from(args.concurrency),
                locations: usize::from(args.locations),
                pending: args.pending,
                pending_due: args.pending_due,
                chat_streams: usize::from(args.chat_streams),
                chat_reply_words: usize::from(args.chat_reply_words),
                chat_delta_interval: std::time::Duration::from_millis(args.chat_delta_ms),
            };
            let json = if options.chat_streams > 0 {
                serde_json::to_string(&loadgen::run_chat(settings, options).await?)
            } else {
                serde_json::to_string(&loadgen::run(settings, options).await?)
            };
            println!("{}", json.context("failed to render json")?);
            Ok(())
        }
        Command::Migrate => {
            let applied = startup::prepare_database(&settings).await?;
            println!("migrations applied: {applied}");
            Ok(())
        }
        Command::Tenant(TenantCommand::Add { name, webhook_secret, output }) => {
            let store = operator_store(&settings).await?;
            let created = ops::add_tenant(&store, &name, webhook_secret.as_deref()).await?;
            print_record(output.json, &created, |t| {
                format!("tenant {} \"{}\"\nwebhook secret: {}", t.tenant.id, t.tenant.name, t.webhook_secret)
            })
        }
        Command::Tenant(TenantCommand::List { output }) => {
            let store = operator_store(&settings).await?;
            let tenants = ops::list_tenants(&store).await?;
            print_record(output.json, &tenants, |ts| {
                ts.iter()
                    .map(|t| format!("{}  {}{}", t.id, t.name, if t.active { "" } else { " (inactive)" }))
                    .collect::<Vec<_>>()
                    .join("\n")
            })
        }
        Command::Location(LocationCommand::Add {
            tenant,
            crm_location_id,
            name,
            timezone,
            address,
            phone,
            sms_from,
            sms_rate,
            email_from,
            output,
        }) => {
            let store = operator_store(&settings).await?;
            let input = LocationInput {
                tenant_id: tenant,
                crm_location_id,
                name,
                timezone,
                address_opt: address,
                phone_opt: phone,
                sms_from_opt: sms_from,
                sms_rate_per_sec: sms_rate,
                email_from_opt: email_from,
            };
            let location = ops::add_location(&store, input).await?;
            print_record(output.json, &location, |l| {
                format!("location {} \"{}\" ({}, crm id {})", l.id, l.name, l.timezone, l.crm_location_id)
            })
        }
        Command::Tenant(TenantCommand::SetCrmKey { tenant, key }) => {
            let store = operator_store(&settings).await?;
            let key = match key {
                Some(key) => key,
                None => {
                    let mut line = String::new();
                    std::io::stdin().read_line(&mut line).context("failed to read the key from stdin")?;
                    line
                }
            };
            let secret_box_opt = settings.secrets.secret_key_opt.as_ref().map(SecretBox::new);
            ops::set_crm_key(&store, secret_box_opt.as_ref(), tenant, &key).await?;
            println!("crm key stored (encrypted) for tenant {tenant}");
            Ok(())
        }
        Command::Location(LocationCommand::Sync { tenant, default_timezone, output }) => {
            let store = operator_store(&settings).await?;
            let crm = startup::crm_client(&settings, &store)?;
            let report = ops::sync_locations(&store, &crm, tenant, default_timezone.as_deref()).await?;
            print_record(output.json, &report, |r| {
                let mut lines: Vec<String> = r
                    .created
                    .iter()
                    .map(|l| format!("created {} \"{}\" ({}, crm id {})", l.id, l.name, l.timezone, l.crm_location_id))
                    .collect();
                lines.extend(r.existing.iter().map(|id| format!("exists  crm id {id}")));
                lines.extend(r.skipped.iter().map(|(id, why)| format!("skipped crm id {id}: {why}")));
                lines.join("\n")
            })
        }
        Command::Location(LocationCommand::List { tenant, output }) => {
            let store = operator_store(&settings).await?;
            let locations = ops::list_locations(&store, tenant).await?;
            print_record(output.json, &locations, |ls| {
                ls.iter()
                    .map(|l| format!("{}  {}  {}  crm:{}", l.id, l.name, l.timezone, l.crm_location_id))
                    .collect::<Vec<_>>()
                    .join("\n")
            })
        }
        Command::Location(LocationCommand::Hours { location, tenant, set, output }) => {
            let store = operator_store(&settings).await?;
            let tenant_id = match tenant {
                Some(tenant_id) => tenant_id,
                None => ops::location_owner(&store, location).await?,
            };
            let hours = ops::set_location_hours(&store, tenant_id, location, &set).await?;
            let record = serde_json::json!({ "location_id": location, "tenant_id": tenant_id, "hours": hours });
            print_record(output.json, &record, |_| format!("location {location} hours: {hours}"))
        }
        Command::Apikey(ApiKeyCommand::Add { tenant, name, output }) => {
            let store = operator_store(&settings).await?;
            let created = ops::add_api_key(&store, tenant, &name).await?;
            print_record(output.json, &created, |k| {
                format!(
                    "api key {} \"{}\" for tenant {}\n{}\n(shown once; store it now)",
                    k.id, k.name, k.tenant_id, k.key
                )
            })
        }
        Command::Healthcheck { url } => {
            let response = reqwest::Client::new()
                .get(format!("{}/readyz", url.trim_end_matches('/')))
                .timeout(std::time::Duration::from_secs(3))
                .send()
                .await
                .context("service unreachable")?;
            anyhow::ensure!(response.status().is_success(), "not ready: {}", response.status());
            Ok(())
        }
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
