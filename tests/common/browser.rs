//! A real browser for console tests: Debian's chromium, headless, driven over WebDriver by
//! chromedriver (both installed by `.ci/run`), with plain HTTP calls.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{json, Value};

const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const CHROMIUM: &str = "/usr/bin/chromium";
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

pub struct Browser {
    driver: Child,
    session: String,
    base: String,
    http: reqwest::Client,
}

impl Browser {
    /// Starts chromedriver on a free loopback port and opens a headless session.
    pub async fn start() -> Browser {
        assert!(
            std::path::Path::new(CHROMEDRIVER).exists() && std::path::Path::new(CHROMIUM).exists(),
            "console tests need Debian's chromium and chromium-driver (apt-get install chromium chromium-driver; .ci/run does)"
        );
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let driver = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let base = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::new();
        for _ in 0..100 {
            if http.get(format!("{base}/status")).send().await.is_ok() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let args = [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--window-size=1400,1100",
        ];
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": CHROMIUM, "args": args},
        }}});
        let mut browser = Browser {
            driver,
            session: String::new(),
            base,
            http,
        };
        let v = browser.call(reqwest::Method::POST, "/session", caps).await;
        browser.session = v["sessionId"].as_str().expect("session id").to_owned();
        browser
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Value) -> Value {
        let mut req = self
            .http
            .request(method.clone(), format!("{}{path}", self.base));
        if method != reqwest::Method::GET {
            req = req.json(&body);
        }
        let v: Value = req.send().await.unwrap().json().await.unwrap();
        assert!(v["value"]["error"].is_null(), "webdriver {path}: {v}");
        v["value"].clone()
    }

    fn path(&self, rest: &str) -> String {
        format!("/session/{}{rest}", self.session)
    }

    pub async fn goto(&self, url: &str) {
        self.call(
            reqwest::Method::POST,
            &self.path("/url"),
            json!({ "url": url }),
        )
        .await;
    }

    /// Runs `script` in the page (`arguments[0]` is `arg`) and answers its return value.
    pub async fn eval(&self, script: &str, arg: &str) -> Value {
        let body = json!({ "script": script, "args": [arg] });
        self.call(reqwest::Method::POST, &self.path("/execute/sync"), body)
            .await
    }

    /// The text of the first element matching `css`, None when there is none.
    pub async fn text(&self, css: &str) -> Option<String> {
        let v = self
            .eval(
                "const e = document.querySelector(arguments[0]); return e ? e.textContent : null;",
                css,
            )
            .await;
        v.as_str().map(str::to_owned)
    }

    /// How many elements match `css`.
    pub async fn count(&self, css: &str) -> usize {
        let v = self
            .eval(
                "return document.querySelectorAll(arguments[0]).length;",
                css,
            )
            .await;
        v.as_u64().unwrap_or(0) as usize
    }

    /// Clicks the first element matching `css`, as a user would.
    pub async fn click(&self, css: &str) {
        let body = json!({ "using": "css selector", "value": css });
        let found = self
            .call(reqwest::Method::POST, &self.path("/element"), body)
            .await;
        let id = found[ELEMENT].as_str().expect("element id");
        self.call(
            reqwest::Method::POST,
            &self.path(&format!("/element/{id}/click")),
            json!({}),
        )
        .await;
    }

    /// A PNG of the window.
    pub async fn screenshot(&self) -> Vec<u8> {
        let v = self
            .call(reqwest::Method::GET, &self.path("/screenshot"), Value::Null)
            .await;
        data_encoding::BASE64
            .decode(v.as_str().unwrap().as_bytes())
            .unwrap()
    }

    pub async fn quit(mut self) {
        let path = self.path("");
        let _ = self
            .http
            .delete(format!("{}{path}", self.base))
            .send()
            .await;
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.driver.kill();
    }
}
