//! The stock Rucio client (`rucio-clients` from PyPI: the `rucio` CLI and the Python API)
//! against real sites: authentication (`/auth/userpass`, re-authentication after expiry, a
//! clear error for wrong credentials), file and dataset replica listings, a BAD declaration
//! that gets repaired, suspicious declarations, tombstones and state updates.
//!
//! The client lives in a virtual environment: `$RUCIO_VENV`, else `.ci/venv` (both made by
//! `.ci/run`). Without one the tests are skipped with a message, unless `CI` is set: then a
//! missing client is a failure.

mod common;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::*;
use serde_json::{json, Value};

const FAST: &str = "[replication]\nworkers = 2\nmax_attempts = 3\nbackoff_initial_ms = 100\nbackoff_max_ms = 400\n[scrub]\nenabled = false\n[rucio]\nbackground_interval_ms = 150\n";

/// The virtual environment holding `bin/rucio`, or None (after saying why) to skip.
fn venv() -> Option<PathBuf> {
    let candidates: Vec<PathBuf> = match std::env::var_os("RUCIO_VENV") {
        Some(v) => vec![PathBuf::from(v)],
        None => vec![Path::new(env!("CARGO_MANIFEST_DIR")).join(".ci/venv")],
    };
    if let Some(found) = candidates.iter().find(|v| v.join("bin/rucio").is_file()) {
        return Some(found.clone());
    }
    let ci = std::env::var("CI").is_ok_and(|v| !v.is_empty());
    assert!(
        !ci,
        "CI is set but the Rucio client is missing: no bin/rucio in {candidates:?} \
         (.ci/run installs it; set RUCIO_VENV to its virtual environment)"
    );
    eprintln!(
        "SKIP: the stock Rucio client is not installed (no bin/rucio in {candidates:?}); \
         create it with `python3 -m venv .ci/venv && .ci/venv/bin/pip install rucio-clients` \
         or set RUCIO_VENV"
    );
    None
}

/// A client set-up: a `rucio.cfg` and its own token file.
struct RucioClient {
    venv: PathBuf,
    dir: tempfile::TempDir,
}

struct Run {
    ok: bool,
    stdout: String,
    stderr: String,
}

impl RucioClient {
    fn new(venv: &Path, site: &Site, account: &str, username: &str, password: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let cfg = format!(
            "[client]\nrucio_host = {url}\nauth_host = {url}\nauth_type = userpass\n\
             account = {account}\nusername = {username}\npassword = {password}\n\
             auth_token_file_path = {token}\nrequest_retries = 1\n",
            url = site.url,
            token = dir.path().join("token").display(),
        );
        std::fs::write(dir.path().join("rucio.cfg"), cfg).unwrap();
        RucioClient {
            venv: venv.to_path_buf(),
            dir,
        }
    }

    fn command(&self, program: &str) -> Command {
        let mut c = Command::new(self.venv.join("bin").join(program));
        c.env("RUCIO_CONFIG", self.dir.path().join("rucio.cfg"))
            .env("RUCIO_HOME", self.dir.path())
            .env_remove("RUCIO_ACCOUNT")
            .env_remove("X509_USER_PROXY");
        c
    }

    async fn run(&self, mut c: Command) -> Run {
        let out = tokio::task::spawn_blocking(move || c.output().expect("run the rucio client"))
            .await
            .unwrap();
        Run {
            ok: out.status.success(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// `rucio <args>`, asserted to succeed; its stdout.
    async fn cli(&self, args: &[&str]) -> String {
        let run = self.cli_run(args).await;
        assert!(
            run.ok,
            "rucio {args:?} failed:\n{}\n{}",
            run.stdout, run.stderr
        );
        run.stdout
    }

    async fn cli_run(&self, args: &[&str]) -> Run {
        let mut c = self.command("rucio");
        c.args(args);
        self.run(c).await
    }

    /// Runs a Python snippet with `client = rucio.client.Client()`; it prints one JSON value.
    async fn python(&self, code: &str) -> Value {
        let script = format!(
            "import json, sys\nfrom rucio.client import Client\nclient = Client()\n{code}\n"
        );
        let mut c = self.command("python");
        c.args(["-c", &script]);
        let run = self.run(c).await;
        assert!(
            run.ok,
            "python client failed:\n{}\n{}",
            run.stdout, run.stderr
        );
        serde_json::from_str(run.stdout.trim())
            .unwrap_or_else(|e| panic!("python printed no JSON ({e}): {}", run.stdout))
    }
}

async fn states(site: &Site, bucket: &str, key: &str) -> Value {
    let text = reqwest::Client::new()
        .post(site.url("/replicas/list"))
        .json(&json!({"dids": [{"scope": bucket, "name": key}], "all_states": true}))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    serde_json::from_str::<Value>(text.lines().next().unwrap_or("null")).unwrap()["states"].clone()
}

async fn state_is(site: &Site, bucket: &str, key: &str, rse: &str, want: &str) {
    eventually(
        Duration::from_secs(30),
        &format!("{bucket}/{key} {want} at {rse}"),
        || async { (states(site, bucket, key).await[rse] == want).then_some(()) },
    )
    .await;
}

fn pfn(site: &Site, bucket: &str, key: &str) -> String {
    format!("{}/replicator/remote/buckets/{bucket}/{key}", site.url)
}

#[tokio::test(flavor = "multi_thread")]
async fn stock_client_lists_declares_and_repairs_on_two_sites() {
    let Some(venv) = venv() else { return };
    let (a, b) = (Site::start("site-a", FAST), Site::start("site-b", FAST));
    mesh(&[&a, &b]).await;
    create_bucket(&a, "physics").await;
    let body = data(40_000, 7);
    for key in ["run1.dat", "run2.dat", "run3.dat"] {
        put_object(&a, "physics", key, body.clone()).await;
    }
    for key in ["run1.dat", "run2.dat", "run3.dat"] {
        state_is(&a, "physics", key, "site-b", "AVAILABLE").await;
    }

    // Auth is off on a loopback listener: any account gets a token, and it is accepted.
    let rucio = RucioClient::new(&venv, &a, "anyone", "anyone", "whatever");

    // list file replicas (the new and the legacy command names).
    let out = rucio
        .cli(&["replica", "list", "file", "physics:run1.dat"])
        .await;
    assert!(out.contains(&pfn(&a, "physics", "run1.dat")), "{out}");
    assert!(out.contains(&pfn(&b, "physics", "run1.dat")), "{out}");
    let legacy = rucio
        .cli(&["list-file-replicas", "--pfns", "physics:run1.dat"])
        .await;
    assert!(legacy.contains(&pfn(&b, "physics", "run1.dat")), "{legacy}");

    // list dataset replicas: the bucket's dataset, complete at both RSEs.
    let out = rucio
        .cli(&["replica", "list", "dataset", "physics:physics"])
        .await;
    for rse in ["site-a", "site-b"] {
        let line = out.lines().find(|l| l.contains(rse)).unwrap_or_else(|| {
            panic!("no {rse} line in:\n{out}");
        });
        assert_eq!(
            line.matches('3').count(),
            2,
            "3 of 3 files at {rse}: {line}"
        );
    }
    let legacy = rucio
        .cli(&["list-dataset-replicas", "physics:physics"])
        .await;
    assert!(legacy.contains("site-b"), "{legacy}");

    // The Python API sees the same.
    let got = rucio
        .python(
            "reps = list(client.list_replicas([{'scope': 'physics', 'name': 'run1.dat'}]))\n\
             meta = client.get_metadata('physics', 'run1.dat')\n\
             rses = sorted(r['rse'] for r in client.list_rses())\n\
             print(json.dumps({'rses': rses, 'replicas': sorted(reps[0]['rses']), \
                               'bytes': meta['bytes'], 'type': meta['did_type']}))",
        )
        .await;
    assert_eq!(
        got,
        json!({"rses": ["site-a", "site-b"], "replicas": ["site-a", "site-b"],
               "bytes": 40_000, "type": "FILE"})
    );

    // declare bad: site-b's copy is corrupt; the declaration repairs it from site-a.
    let file = object_file(&b, "physics", "run1.dat");
    let mut bytes = std::fs::read(&file).unwrap();
    bytes[100] ^= 0x5a;
    std::fs::write(&file, bytes).unwrap();
    rucio
        .cli(&[
            "replica",
            "state",
            "update",
            "bad",
            &pfn(&b, "physics", "run1.dat"),
            "--reason",
            "checksum error seen by a job",
        ])
        .await;
    eventually(
        Duration::from_secs(45),
        "site-b's copy repaired",
        || async {
            std::fs::read(&file)
                .is_ok_and(|now| now == body)
                .then_some(())
        },
    )
    .await;
    state_is(&a, "physics", "run1.dat", "site-b", "AVAILABLE").await;
    eventually(Duration::from_secs(30), "declaration RECOVERED", || async {
        let text = reqwest::get(a.url("/replicas/bad/states?rse=site-b"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        text.lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .any(|d| d["name"] == "run1.dat" && d["state"] == "RECOVERED")
            .then_some(())
    })
    .await;

    // declare suspicious, then list suspicious replicas (CLI).
    let answer = rucio
        .python(&format!(
            "print(json.dumps(client.declare_suspicious_file_replicas([{:?}], 'slow read')))",
            pfn(&a, "physics", "run2.dat")
        ))
        .await;
    assert_eq!(answer, json!({}), "every PFN declared");
    let out = rucio.cli(&["replica", "state", "list", "suspicious"]).await;
    assert!(out.contains("run2.dat") && out.contains("site-a"), "{out}");

    // update states: site-b's copy of run3 unavailable, then available again.
    let updated = rucio
        .python(
            "ok = client.update_replicas_states('site-b', [{'scope': 'physics', 'name': 'run3.dat', 'state': 'U'}])\n\
             print(json.dumps(ok))",
        )
        .await;
    assert_eq!(updated, json!(true));
    state_is(&a, "physics", "run3.dat", "site-b", "UNAVAILABLE").await;
    rucio
        .python(
            "print(json.dumps(client.update_replicas_states('site-b', [{'scope': 'physics', 'name': 'run3.dat', 'state': 'A'}])))",
        )
        .await;
    state_is(&a, "physics", "run3.dat", "site-b", "AVAILABLE").await;

    // set tombstone (CLI `replica remove`): the reaper deletes site-b's copy only.
    rucio
        .cli(&["replica", "remove", "physics:run2.dat", "--rse", "site-b"])
        .await;
    eventually(Duration::from_secs(30), "site-b's run2 reaped", || async {
        let s = states(&a, "physics", "run2.dat").await;
        (s.get("site-b").is_none() && s["site-a"] == "AVAILABLE").then_some(())
    })
    .await;

    // An unknown DID is the client's DataIdentifierNotFound.
    let run = rucio
        .cli_run(&["replica", "list", "file", "physics:nope.dat"])
        .await;
    assert!(!run.ok);
    assert!(
        format!("{}{}", run.stdout, run.stderr).contains("not found"),
        "{}{}",
        run.stdout,
        run.stderr
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn stock_client_authenticates_with_client_credentials() {
    let Some(venv) = venv() else { return };
    let auth = "[auth]\nenabled = true\njwt_secret = \"a-long-test-secret-of-more-than-32-bytes!\"\n\
                token_lifetime_secs = 2\nleeway_secs = 0\n\
                [[auth.clients]]\nid = \"ops\"\nsecret = \"ops-secret\"\nscopes = [\"mirrorgate::admin\"]\n";
    let a = Site::start("site-a", &format!("{FAST}{auth}"));
    create_bucket(&a, "physics").await;
    put_object(&a, "physics", "run1.dat", data(1000, 1)).await;

    let good = RucioClient::new(&venv, &a, "root", "ops", "ops-secret");
    let out = good
        .cli(&["replica", "list", "file", "physics:run1.dat"])
        .await;
    assert!(out.contains(&pfn(&a, "physics", "run1.dat")), "{out}");
    // The cached token expires: the client gets a 401, authenticates again and goes on.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let out = good
        .cli(&["replica", "list", "file", "physics:run1.dat"])
        .await;
    assert!(out.contains("site-a"), "{out}");

    // Wrong credentials end the client's re-authentication loop with a clear error.
    let bad = RucioClient::new(&venv, &a, "root", "ops", "wrong");
    let run = bad
        .cli_run(&["replica", "list", "file", "physics:run1.dat"])
        .await;
    assert!(!run.ok);
    let said = format!("{}{}", run.stdout, run.stderr);
    assert!(said.contains("annot authenticate"), "{said}");

    // The raw endpoints.
    let http = reqwest::Client::new();
    let r = http
        .get(a.url("/auth/userpass"))
        .header("X-Rucio-Account", "root")
        .header("X-Rucio-Username", "ops")
        .header("X-Rucio-Password", "ops-secret")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers().contains_key("x-rucio-auth-token-expires"));
    let token = r.headers()["x-rucio-auth-token"]
        .to_str()
        .unwrap()
        .to_owned();
    let r = http
        .get(a.url("/auth/validate"))
        .header("X-Rucio-Auth-Token", &token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["account"], "ops");
    for (path, token) in [
        ("/rses/", "garbage"),
        ("/dids/physics/run1.dat/meta", "x.y.z"),
    ] {
        let r = http
            .get(a.url(path))
            .header("X-Rucio-Auth-Token", token)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401, "{path}");
        assert_eq!(r.headers()["exceptionclass"], "CannotAuthenticate");
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["ExceptionClass"], "CannotAuthenticate");
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let r = http
        .get(a.url("/rses/"))
        .header("X-Rucio-Auth-Token", &token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401, "expired token");
    assert_eq!(r.headers()["exceptionclass"], "CannotAuthenticate");
}
