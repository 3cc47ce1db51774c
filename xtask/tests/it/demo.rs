//! `cargo xtask demo` from a scratch checkout, then Debian's Chromium
//! (headless) on its two pages: a message typed in the stand-in's chat page
//! reaches the bot, and what the bot stored shows on the app's dashboard, a
//! `<script>` message as text. Screenshots of both pages go to
//! `target/screenshots/`. A second `demo` reuses everything; `--down` removes
//! what the demo made. Names are unique to this run, and only what it created
//! is removed.

use std::time::{Duration, Instant};

use bollard::Docker;
use bollard::query_parameters::RemoveImageOptionsBuilder;

use crate::browser::{Browser, target_dir};
use crate::support::{Sweep, engine, test_name};
use crate::{Checkout, Run};

/// Removes what the test made, however it ends: `demo --down`, the stand-in
/// images the engine did not have before, then (when `_sweep` drops, after
/// [`Cleanup::drop`]) anything still named after the run and its image tags.
struct Cleanup<'a> {
    checkout: &'a Checkout,
    prefix: String,
    standin_images_before: Vec<String>,
    _sweep: Sweep,
}

impl Drop for Cleanup<'_> {
    fn drop(&mut self) {
        let _ = self.checkout.run(&["demo", "--down", "--prefix", &self.prefix]);
        let Some((rt, docker)) = engine() else { return };
        rt.block_on(async {
            for tag in image_tags(&docker).await {
                if tag.starts_with("boxcar/standin:") && !self.standin_images_before.contains(&tag) {
                    let options = RemoveImageOptionsBuilder::default().force(true).build();
                    let _ = docker.remove_image(&tag, Some(options), None).await;
                }
            }
        });
    }
}

async fn image_tags(docker: &Docker) -> Vec<String> {
    let images = docker.list_images(None::<bollard::query_parameters::ListImagesOptions>).await.unwrap_or_default();
    images.into_iter().flat_map(|i| i.repo_tags).collect()
}

fn url(run: &Run, what: &str) -> String {
    run.stdout
        .lines()
        .find_map(|l| l.trim_start().strip_prefix(what))
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no `{what}` address in:\n{}\n{}", run.stdout, run.stderr))
        .to_owned()
}

#[test]
fn demo_runs_and_chromium_sees_a_chat_message_on_the_dashboard() {
    // One name, the prefix of every container and network and the image repository.
    let prefix = test_name("boxcar-demotest");
    let repo = prefix.clone();
    let checkout = Checkout::plain("demo");
    let (rt, docker) = engine().expect("this test needs a Docker engine (cargo xtask test starts one)");
    let standin_images_before =
        rt.block_on(image_tags(&docker)).into_iter().filter(|t| t.starts_with("boxcar/standin:")).collect();
    let _cleanup = Cleanup {
        checkout: &checkout,
        prefix: prefix.clone(),
        standin_images_before,
        _sweep: Sweep::new(std::slice::from_ref(&prefix), std::slice::from_ref(&repo)),
    };
    let demo = ["demo", "--prefix", &prefix, "--repo", &repo, "--dashboard-port", "0", "--chat-port", "0"];

    let started = Instant::now();
    let first = checkout.run(&demo).ok();
    eprintln!("figure: first `cargo xtask demo` in a scratch checkout: {:.1} s", started.elapsed().as_secs_f64());
    assert!(first.stderr.contains("demo environment: created deploy-config/demo.toml"), "{}", first.stderr);
    assert!(first.stdout.contains("stand-in for Telegram, not Telegram"), "{}", first.stdout);
    assert!(first.stdout.contains(&format!("cargo xtask demo --down --prefix {prefix}")), "{}", first.stdout);
    // The key went to the key folder, not into the checkout.
    let keys: Vec<_> = std::fs::read_dir(checkout.keys.path()).unwrap().collect();
    assert_eq!(keys.len(), 1, "one demo key in the key folder");
    let status = crate::git(checkout.dir.path(), &["status", "--porcelain"]);
    assert!(status.trim().is_empty(), "the demo left the checkout dirty: {status}");

    let started = Instant::now();
    let second = checkout.run(&demo).ok();
    eprintln!("figure: second `cargo xtask demo`: {:.1} s", started.elapsed().as_secs_f64());
    assert!(second.stderr.contains("already runs"), "{}", second.stderr);
    assert!(second.stdout.contains("nothing to do"), "{}", second.stdout);
    let dashboard = url(&second, "dashboard");
    let chat = url(&second, "chat");
    assert!(dashboard.starts_with("http://127.0.0.1:") && chat.starts_with("http://127.0.0.1:"));

    let shots = target_dir().join("screenshots");
    let browser = Browser::start();
    let page = browser.new_page();
    page.goto(&chat);
    assert!(page.wait_for("!!document.querySelector('#text')", Duration::from_secs(30)), "no chat form on {chat}");
    for (typed, reply) in [
        ("/mood sunny, typed in Chromium", "Mood set to: sunny, typed in Chromium"),
        ("/mood <script>alert(1)</script>", "Mood set to: <script>alert(1)</script>"),
    ] {
        page.type_into("#text", typed);
        page.click("#send");
        let wanted = serde_json::to_string(reply).unwrap();
        let seen = page.wait_for(
            &format!(
                "[...document.querySelectorAll('#messages li.msg.bot .text')].some(e => e.textContent === {wanted})"
            ),
            Duration::from_secs(30),
        );
        assert!(seen, "the bot did not answer {typed:?}; the page says:\n{}", page.text("body"));
    }
    page.screenshot(&shots.join("demo-chat.png"));
    assert!(page.dialogs().is_empty(), "a script ran on the chat page: {:?}", page.dialogs());

    page.goto(&dashboard);
    let shown = page.wait_for("document.body.innerText.includes('<script>alert(1)</script>')", Duration::from_secs(15));
    assert!(shown, "the dashboard does not show the mood; it says:\n{}", page.text("body"));
    assert_eq!(page.eval("document.querySelectorAll('script').length"), 0, "the dashboard has a script element");
    assert!(page.text(".mood").contains("set by You"), "{}", page.text(".mood"));
    page.screenshot(&shots.join("demo-dashboard.png"));
    assert!(page.dialogs().is_empty(), "a script ran on the dashboard: {:?}", page.dialogs());
    for name in ["demo-chat.png", "demo-dashboard.png"] {
        let png = std::fs::read(shots.join(name)).unwrap();
        assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "{name} is not a PNG");
    }
    drop(page);
    drop(browser);

    let down = checkout.run(&["demo", "--down", "--prefix", &prefix]).ok();
    assert!(down.stdout.contains(&format!("removed    container {prefix}-app")), "{}", down.stdout);
    assert!(down.stdout.contains(&format!("removed    container {prefix}-standin")), "{}", down.stdout);
    assert!(down.stdout.contains(&format!("removed    network {prefix}")), "{}", down.stdout);
}
