//! A throw-away PostgreSQL cluster for tests: `initdb` in a temporary directory, the server on
//! a free 127.0.0.1 port, one database per test, stopped (immediately) on drop. As root (CI),
//! the cluster belongs to `nobody`: PostgreSQL refuses to run as root.
//!
//! The binaries are looked up on PATH, then under /usr/lib/postgresql/*/bin (Debian's
//! `postgresql` package). Absent, [`Postgres::start`] answers None, except under `CI=true`
//! where it panics: CI installs them, so a missing server is a broken run, not a skip.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

use sqlx::Connection;

/// The user a root test process runs the cluster as.
const UNPRIVILEGED_UID: u32 = 65534;

pub struct Postgres {
    bin: PathBuf,
    data: PathBuf,
    pub port: u16,
    as_root: bool,
    _dir: tempfile::TempDir,
}

impl Postgres {
    /// Starts a cluster, or None when PostgreSQL is not installed (outside CI).
    pub fn start() -> Option<Postgres> {
        let Some(bin) = binaries() else {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "CI=true but no PostgreSQL server binaries (initdb, pg_ctl) on PATH or under \
                 /usr/lib/postgresql/*/bin: .ci/run installs the `postgresql` package"
            );
            eprintln!("PostgreSQL is not installed: skipping");
            return None;
        };
        let dir = tempfile::tempdir().expect("tempdir");
        let as_root = unsafe_geteuid() == 0;
        let data = dir.path().join("data");
        std::fs::create_dir_all(&data).unwrap();
        if as_root {
            chown_tree(dir.path());
        }
        let pg = Postgres {
            bin,
            data,
            port: 0,
            as_root,
            _dir: dir,
        };
        pg.run(
            "initdb",
            &[
                "-D",
                pg.data.to_str().unwrap(),
                "-U",
                "postgres",
                "--auth=trust",
                "--no-sync",
                "-E",
                "UTF8",
            ],
        );
        Some(pg.serve())
    }

    /// Runs the server on a free port (a few tries: the port is picked before it is bound).
    fn serve(mut self) -> Postgres {
        for _ in 0..5 {
            self.port = free_port();
            let options = format!(
                "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=300 \
                 -c shared_buffers=32MB",
                self.port,
                self.data.display()
            );
            let log = self.data.join("server.log");
            let started = self.try_run(
                "pg_ctl",
                &[
                    "-D",
                    self.data.to_str().unwrap(),
                    "-l",
                    log.to_str().unwrap(),
                    "-o",
                    &options,
                    "-w",
                    "-t",
                    "60",
                    "start",
                ],
            );
            if started {
                return self;
            }
        }
        panic!("PostgreSQL did not start: {}", self.server_log());
    }

    /// A new empty database; answers its URL.
    pub async fn database(&self) -> String {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "mg_{}_{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::SeqCst)
        );
        let mut admin = sqlx::PgConnection::connect(&self.url("postgres"))
            .await
            .expect("connect to the test cluster");
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut admin)
            .await
            .expect("create database");
        admin.close().await.ok();
        self.url(&name)
    }

    pub fn url(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }

    pub fn server_log(&self) -> String {
        std::fs::read_to_string(self.data.join("server.log")).unwrap_or_default()
    }

    fn run(&self, tool: &str, args: &[&str]) {
        assert!(self.try_run(tool, args), "{tool} {args:?} failed");
    }

    fn try_run(&self, tool: &str, args: &[&str]) -> bool {
        let program = self.bin.join(tool);
        let mut cmd = if self.as_root {
            let mut c = Command::new("setpriv");
            c.arg(format!("--reuid={UNPRIVILEGED_UID}"))
                .arg(format!("--regid={UNPRIVILEGED_UID}"))
                .arg("--clear-groups")
                .arg(&program);
            c
        } else {
            Command::new(&program)
        };
        let out = cmd
            .args(args)
            .current_dir(&self.data)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("run {}: {e}", program.display()));
        if !out.status.success() {
            eprintln!(
                "{tool}: {}\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        out.status.success()
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let data = self.data.to_str().unwrap().to_owned();
        self.try_run("pg_ctl", &["-D", &data, "-m", "immediate", "-w", "stop"]);
    }
}

/// The directory holding initdb and pg_ctl.
fn binaries() -> Option<PathBuf> {
    let on_path = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default();
    let mut debian: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|d| d.filter_map(|e| Some(e.ok()?.path().join("bin"))).collect())
        .unwrap_or_default();
    debian.sort();
    debian.reverse(); // the newest version first
    on_path
        .into_iter()
        .chain(debian)
        .find(|d| d.join("initdb").is_file() && d.join("pg_ctl").is_file())
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn unsafe_geteuid() -> u32 {
    let out = Command::new("id").arg("-u").output().expect("id -u");
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or(1)
}

/// Gives a tree to the unprivileged user (the temporary directory itself included).
fn chown_tree(root: &Path) {
    let ok = Command::new("chown")
        .arg("-R")
        .arg(format!("{UNPRIVILEGED_UID}:{UNPRIVILEGED_UID}"))
        .arg(root)
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "chown {}", root.display());
}
