//! The customer journey in a real headless Chromium (through ChromeDriver): open a lead's magic
//! link at phone width, see the history, send a message and watch the reply stream in, tap an
//! offered time and see the booking confirmed; then open the staff dashboard and see that lead
//! as booked with its timeline. Screenshots land in `target/browser-screenshots/`.
//!
//! `scripts/test.sh` installs Debian's chromium and chromium-driver when they are missing and
//! exports their paths; without them this test fails saying so, unless
//! `LEADORCH_SKIP_BROWSER_TESTS=1` skips it knowingly.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};

use crate::helpers::{COMPANY, SECRET_KEY, eventually, spawn_crm_world};

/// A ChromeDriver process, killed on drop.
struct Driver {
    child: Child,
    url: String,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn find(env: &str, candidates: &[&str]) -> Option<PathBuf> {
    std::env::var(env)
        .ok()
        .filter(|v| !v.trim().is_empty())
        .map(PathBuf::from)
        .into_iter()
        .chain(candidates.iter().map(PathBuf::from))
        .find(|path| path.is_file())
}

/// Starts ChromeDriver, or returns `None` when the run opted out of browser tests.
fn start_driver() -> Option<(Driver, PathBuf)> {
    let chromium = find("LEADORCH_CHROMIUM", &["/usr/bin/chromium", "/usr/bin/chromium-browser"]);
    let driver = find("LEADORCH_CHROMEDRIVER", &["/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver"]);
    let (Some(chromium), Some(driver)) = (chromium, driver) else {
        if std::env::var("LEADORCH_SKIP_BROWSER_TESTS").is_ok_and(|v| v == "1") {
            eprintln!("browser test skipped: LEADORCH_SKIP_BROWSER_TESTS=1");
            return None;
        }
        panic!(
            "chromium and chromedriver are needed for the browser test: run scripts/test.sh (it installs them), \
             or apt-get install chromium chromium-driver, or set LEADORCH_SKIP_BROWSER_TESTS=1 to skip it"
        );
    };
    let port = TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("free port").port();
    let child = Command::new(driver)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("chromedriver starts");
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "chromedriver did not listen within 10 s");
        std::thread::sleep(Duration::from_millis(50));
    }
    Some((Driver { child, url: format!("http://127.0.0.1:{port}") }, chromium))
}

async fn browser(driver: &Driver, chromium: &std::path::Path, width: u32, height: u32) -> Client {
    let mut options = json!({
        "binary": chromium,
        "args": [
            "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
            "--hide-scrollbars", format!("--window-size={},{}", width.max(500), height),
        ],
    });
    if width < 500 {
        // Headless windows are at least 500 px wide: a phone is emulated (viewport, touch,
        // device pixel ratio) rather than approximated with a narrow window.
        options["mobileEmulation"] =
            json!({ "deviceMetrics": { "width": width, "height": height, "pixelRatio": 2.0, "touch": true } });
    }
    let mut caps = serde_json::Map::new();
    caps.insert("goog:chromeOptions".to_owned(), options);
    ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(caps)
        .connect(&driver.url)
        .await
        .expect("a chromium session")
}

fn screenshot_dir() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target").join("browser-screenshots");
    std::fs::create_dir_all(&dir).expect("screenshot dir");
    dir
}

async fn save_screenshot(client: &Client, name: &str) {
    let png = client.screenshot().await.expect("screenshot");
    std::fs::write(screenshot_dir().join(name), png).expect("screenshot written");
}

async fn wait_css(client: &Client, css: &str) -> fantoccini::elements::Element {
    client.wait().at_most(Duration::from_secs(15)).for_element(Locator::Css(css)).await.unwrap_or_else(|err| {
        panic!("{css} did not appear: {err}");
    })
}

/// Waits until `script` (a JS expression) is truthy in the page.
async fn wait_js(client: &Client, script: &str, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let value = client.execute(&format!("return !!({script});"), vec![]).await.expect("script runs");
        if value == Value::Bool(true) {
            return;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_customer_chats_and_books_in_a_real_browser_and_staff_see_it_on_the_dashboard() {
    let Some((driver, chromium)) = start_driver() else { return };
    let world = spawn_crm_world(1, 1, |s| {
        s.poller.enabled = false;
        s.ai.scripted_word_delay = Duration::from_millis(25);
    })
    .await;
    let customer = world.sim.customer(COMPANY, 0);
    let order = world.sim.create_order(COMPANY, &world.sim_locations[0].id, Some(&customer.id));
    let lead = world.lead_for(&order.id, Duration::from_secs(5)).await.expect("lead");
    assert!(eventually(Duration::from_secs(5), || async { !world.app.twilio.sent().is_empty() }).await);
    // The customer's link, exactly as the SMS carries it.
    let sms = world.app.twilio.sent().into_iter().next().expect("first sms");
    let link = sms.body.split_whitespace().find(|w| w.contains("/c/")).expect("link in the sms").to_owned();
    let token = link.rsplit('/').next().expect("token").to_owned();
    let page = format!("{}/c/{token}", world.app.address);
    // Some history before the page opens.
    let http = &world.app.http;
    let sent = http
        .post(format!("{}/api/chat/{}", world.app.address, lead.id))
        .bearer_auth(&token)
        .json(&json!({ "message": "Hi, what are your hours?" }))
        .send()
        .await
        .expect("sent");
    assert_eq!(sent.status(), 202);
    let answered = eventually(Duration::from_secs(10), || async {
        let history: Value = http
            .get(format!("{}/api/chat/{}/history", world.app.address, lead.id))
            .bearer_auth(&token)
            .send()
            .await
            .expect("history")
            .json()
            .await
            .expect("json");
        history["messages"]
            .as_array()
            .is_some_and(|m| m.iter().any(|m| m["role"] == "assistant" && m["status"] == "complete"))
    })
    .await;
    assert!(answered);

    let client = browser(&driver, &chromium, 360, 740).await;
    client.goto(&page).await.expect("open the link");
    wait_js(&client, "document.querySelectorAll('#messages .msg').length >= 2", "the history").await;
    let name = wait_css(&client, "#location-name").await.text().await.expect("text");
    assert_eq!(name, world.locations[0].name);
    let width: Value = client.execute("return document.documentElement.scrollWidth;", vec![]).await.expect("width");
    assert!(width.as_u64().is_some_and(|w| w <= 360), "no horizontal scrolling at 360 px (got {width})");
    save_screenshot(&client, "chat-history-360.png").await;

    // Send a message; the reply streams in with the offered times as buttons.
    let input = wait_css(&client, "#message").await;
    input.send_keys("Can I book an appointment?").await.expect("typed");
    wait_css(&client, "#send").await.click().await.expect("sent");
    let slot = wait_css(&client, ".slots button.slot").await;
    let label = slot.text().await.expect("label");
    wait_js(
        &client,
        &format!(
            "[...document.querySelectorAll('.msg-assistant')].some(m => m.textContent.includes({}))",
            json!(label)
        ),
        "the reply naming the offered time",
    )
    .await;
    let user_bubbles: Value = client
        .execute("return [...document.querySelectorAll('.msg-user')].filter(m => m.textContent.includes('Can I book')).length;", vec![])
        .await
        .expect("count");
    assert_eq!(user_bubbles, json!(1), "the message is shown once");
    save_screenshot(&client, "chat-offer-360.png").await;

    // Tap the first time: the booking is confirmed on the page, in the store and at ShopMonkey.
    slot.click().await.expect("tapped");
    let banner = wait_css(&client, "#booking-banner").await;
    wait_js(&client, "document.querySelector('#booking-banner').textContent.includes('booked')", "the banner").await;
    assert!(banner.text().await.expect("text").contains(&label), "the banner names the time");
    wait_js(
        &client,
        &format!(
            "[...document.querySelectorAll('.msg-assistant')].some(m => m.textContent.includes(\"You're booked for \" + {}))",
            json!(label)
        ),
        "the whole confirmation reply",
    )
    .await;
    wait_js(&client, "document.querySelector('#messages').getAttribute('aria-busy') !== 'true'", "the reply to finish")
        .await;
    save_screenshot(&client, "chat-booked-360.png").await;
    let appointment = world.app.store.appointments.of_lead(lead.tenant_id, lead.id).await.expect("read");
    assert!(appointment.is_some(), "the appointment is stored");
    assert_eq!(world.sim.appointments(COMPANY).len(), 1, "and created at ShopMonkey");
    client.close().await.expect("closed");

    // A tampered link gets the friendly page.
    let client = browser(&driver, &chromium, 360, 740).await;
    let mut tampered = token.clone();
    tampered.replace_range(..1, if tampered.starts_with('A') { "B" } else { "A" });
    client.goto(&format!("{}/c/{tampered}", world.app.address)).await.expect("open");
    let body = wait_css(&client, "body").await.text().await.expect("text");
    assert!(body.to_lowercase().contains("link"), "{body}");
    client.close().await.expect("closed");

    // Staff open the dashboard and see the lead booked, with its timeline and transcript.
    let key = leadorch::ops::add_api_key(&world.app.store, world.tenant.id, "browser test").await.expect("key");
    let client = browser(&driver, &chromium, 1280, 900).await;
    client.goto(&format!("{}/dashboard", world.app.address)).await.expect("dashboard");
    wait_css(&client, "#api-key").await.send_keys(&key.key).await.expect("typed");
    wait_css(&client, "#key-submit").await.click().await.expect("signed in");
    let row = format!("#leads tbody tr[data-lead-id='{}']", lead.id);
    wait_css(&client, &row).await;
    wait_js(&client, &format!("document.querySelector(\"{row} td.status\").textContent.includes('booked')"), "booked")
        .await;
    wait_css(&client, &row).await.click().await.expect("selected");
    wait_css(&client, "#timeline li").await;
    wait_js(&client, "document.querySelectorAll('#transcript .msg').length >= 4", "the transcript").await;
    save_screenshot(&client, "dashboard-1280.png").await;
    client.close().await.expect("closed");
    let _ = SECRET_KEY;
    world.teardown().await;
}
