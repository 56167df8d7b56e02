//! A throwaway PostgreSQL server for tests and benches: `initdb` into a temporary directory,
//! started with `pg_ctl` on 127.0.0.1 (as the `postgres` user when running as root, since the
//! server refuses root), stopped and deleted when the process exits, however it exits.
//!
//! The server binaries are found in `$WIT_PG_BINDIR`, else the newest
//! `/usr/lib/postgresql/*/bin`. Without them the PostgreSQL tests say how to get them and
//! skip, unless `WIT_REQUIRE_POSTGRES=1` (set by `.ci/run`), which makes their absence fail.

use std::io::Write;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};

pub struct PgServer {
    bindir: PathBuf,
    dir: PathBuf,
    port: u16,
    as_postgres: bool,
    fsync: bool,
    /// Stops the server and removes `dir` when this process exits (its stdin closes).
    _watchdog: Mutex<(Child, ChildStdin)>,
}

fn find_bindir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("WIT_PG_BINDIR") {
        return Some(PathBuf::from(dir));
    }
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let version: u32 = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((version, bin))
        })
        .collect();
    found.sort();
    found.pop().map(|(_, bin)| bin)
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

const MISSING: &str = "PostgreSQL server binaries not found: the PostgreSQL tracker tests are skipped. \
    Install them (Debian: `apt-get install postgresql`) or point WIT_PG_BINDIR at the directory \
    holding initdb and pg_ctl; `.ci/run` sets WIT_REQUIRE_POSTGRES=1, which makes this a failure.";

impl PgServer {
    /// The server shared by a test binary, started on first use; `None` (after saying why)
    /// when PostgreSQL is not installed and not required.
    pub fn shared() -> Option<&'static PgServer> {
        static SERVER: OnceLock<Option<PgServer>> = OnceLock::new();
        SERVER.get_or_init(|| PgServer::start(false)).as_ref()
    }

    /// A server of its own (for tests that stop it), or `None` as for [`shared`].
    pub fn start(fsync: bool) -> Option<PgServer> {
        let Some(bindir) = find_bindir() else {
            if std::env::var_os("WIT_REQUIRE_POSTGRES").is_some_and(|v| v != "0") {
                panic!("{MISSING}");
            }
            static SAID: OnceLock<()> = OnceLock::new();
            SAID.get_or_init(|| eprintln!("{MISSING}"));
            return None;
        };
        Some(PgServer::start_in(bindir, fsync))
    }

    fn start_in(bindir: PathBuf, fsync: bool) -> PgServer {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "wit-pg-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).expect("create the server directory");
        let as_postgres = is_root();
        if as_postgres {
            let status = Command::new("chown")
                .args(["-R", "postgres:"])
                .arg(&dir)
                .status()
                .expect("chown");
            assert!(status.success(), "chown {} to postgres failed", dir.display());
        }
        let port = TcpListener::bind("127.0.0.1:0")
            .expect("a free port")
            .local_addr()
            .expect("addr")
            .port();
        // The watchdog first: whatever happens next, the directory goes when we do.
        let mut watchdog = Command::new("sh")
            .arg("-c")
            .arg(r#"read _; $RUN "$BIN/pg_ctl" -D "$DIR/data" -m immediate stop >/dev/null 2>&1; rm -rf "$DIR""#)
            .env("RUN", if as_postgres { "runuser -u postgres --" } else { "" })
            .env("BIN", &bindir)
            .env("DIR", &dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the watchdog");
        let stdin = watchdog.stdin.take().expect("watchdog stdin");
        let server = PgServer {
            bindir,
            dir,
            port,
            as_postgres,
            fsync,
            _watchdog: Mutex::new((watchdog, stdin)),
        };
        server.run(
            "initdb",
            &[
                "-D",
                &server.data().to_string_lossy(),
                "-U",
                "wit",
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
                "--no-instructions",
            ],
        );
        server.start_again();
        server.psql("postgres", "CREATE DATABASE wit");
        server
    }

    fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    fn command(&self, program: &str) -> Command {
        let path = self.bindir.join(program);
        if self.as_postgres {
            let mut cmd = Command::new("runuser");
            cmd.args(["-u", "postgres", "--"]).arg(path);
            cmd
        } else {
            Command::new(path)
        }
    }

    fn run(&self, program: &str, args: &[&str]) -> String {
        let out = self
            .command(program)
            .args(args)
            .current_dir(&self.dir)
            .output()
            .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
        assert!(
            out.status.success(),
            "{program} {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs SQL through `psql` as the superuser `wit`; returns its unaligned output.
    pub fn psql(&self, dbname: &str, sql: &str) -> String {
        let port = self.port.to_string();
        self.run(
            "psql",
            &[
                "-X",
                "-q",
                "-A",
                "-t",
                "-v",
                "ON_ERROR_STOP=1",
                "-h",
                "127.0.0.1",
                "-p",
                &port,
                "-U",
                "wit",
                "-d",
                dbname,
                "-c",
                sql,
            ],
        )
    }

    /// Connection parameters for a tracker working in its own schema `schema` (created here).
    pub fn schema(&self, schema: &str) -> String {
        self.psql(
            "wit",
            &format!("DROP SCHEMA IF EXISTS {schema} CASCADE; CREATE SCHEMA {schema}"),
        );
        format!(
            "host=127.0.0.1 port={} user=wit dbname=wit options='-c search_path={schema}'",
            self.port
        )
    }

    /// A fresh schema with a unique name.
    pub fn fresh_schema(&self, prefix: &str) -> String {
        static N: AtomicUsize = AtomicUsize::new(0);
        self.schema(&format!("{prefix}_{}", N.fetch_add(1, Ordering::Relaxed)))
    }

    /// Stops the server (fast shutdown: sessions are cut off).
    pub fn stop(&self) {
        self.run(
            "pg_ctl",
            &["-D", &self.data().to_string_lossy(), "-m", "fast", "-w", "stop"],
        );
    }

    /// Starts the (stopped) server again on the same port.
    pub fn start_again(&self) {
        let options = format!(
            "-p {} -c listen_addresses=127.0.0.1 -k {} -c fsync={} -c max_connections=200",
            self.port,
            self.dir.display(),
            if self.fsync { "on" } else { "off" }
        );
        let log = self.dir.join("server.log");
        self.run(
            "pg_ctl",
            &[
                "-D",
                &self.data().to_string_lossy(),
                "-o",
                &options,
                "-l",
                &log.to_string_lossy(),
                "-w",
                "start",
            ],
        );
    }

    #[allow(dead_code)]
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        // Closing the watchdog's stdin stops the server and removes its directory.
        if let Ok(mut guard) = self._watchdog.lock() {
            let (child, stdin) = &mut *guard;
            let _ = stdin.write_all(b"\n");
            let _ = stdin.flush();
            let _ = child.wait();
        }
    }
}
