//! `wit`: the command-line tool for Wit: SQL over a pipeline's data, and Wit's write-ahead
//! log.
//!
//! `wit serve` runs the server: OTLP in, durable storage, SQL out (see `serve/mod.rs`).
//!
//! `wit query` runs one SQL query as one tenant over a pipeline directory (its SQLite
//! tracker is the file catalog; see `query.rs`).
//!
//! `wit wal dump`, `verify` and `stats` look at a log directory read-only, through
//! [`wit_wal::Inspector`], so they work on a log that another process has open (whose tail may
//! then show as torn). `wit wal append` is a console producer: it appends stdin's lines and
//! prints each record's LSN once the record is durable.
//!
//! Exit status: 0 on success; 1 when damage is found or an append fails; 2 for usage errors
//! and for directories that cannot be opened as a log.
//!
//! The arguments are parsed by hand: there are five subcommands with six options between
//! them, which does not justify a parser crate and its build time.

use std::ffi::OsString;
use std::io::{self, BufRead, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::mpsc;

use wit_wal::{Commit, Config, Damage, Inspector, Item, Lsn, Wal};

mod query;
mod serve;

/// mimalloc keeps freed memory for the next allocation; glibc's malloc returned the
/// pipeline's large buffers to the kernel and had them faulted in, zeroed, again (a third of
/// the pipeline thread's time under load, in `examples/benches/serve.rs`).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const USAGE: &str = "\
wit: tools for Wit's durable telemetry log

Usage:
    wit <command> [args...]

Commands:
    serve   receive OTLP over HTTP, store it durably, answer SQL (see `wit serve --help`)
    query   run SQL over a pipeline directory's data as one tenant (see `wit query --help`)
    wal     inspect a write-ahead log directory, or append to it (see `wit wal --help`)
    keys    `wit keys hash`: a new random API key and the SHA-256 to configure for it
    help    print this text (also -h, --help)
";

/// The synopsis of `wit wal`, shared by its help text and its usage errors.
macro_rules! wal_synopsis {
    () => {
        "\
Usage:
    wit wal dump <dir> [--from LSN] [--payload]
    wit wal verify <dir>
    wit wal stats <dir>
    wit wal append <dir> [--segment-size SIZE]
"
    };
}

/// Printed after a usage error of `wit wal`.
const WAL_USAGE: &str = concat!(wal_synopsis!(), "\nRun `wit wal --help` for details.\n");

const WAL_HELP: &str = concat!(
    "wit wal: inspect a write-ahead log directory, or append to it\n\n",
    wal_synopsis!(),
    "
Subcommands:
    dump      One line per record: LSN, payload length, checksum status (ok/BAD), segment
              file and offset; with --payload also the payload, escaped (\\n, \\xff, ...).
              Torn tails and damage are shown where they are found. Records below
              --from LSN are skipped. Exits 1 if damage is found.
    verify    Checks every segment and record. Exits 0 if the log is intact (a torn tail,
              which the next open cuts off, is mentioned but is not damage), 1 naming the
              first damaged file, offset and LSN otherwise.
    stats     Segments, records, first/last LSN and bytes on disk. Exits 1 if damage
              stops the count early.
    append    Appends each line of stdin (without its \\n) as one record and prints each
              record's LSN once it is durable (fdatasync). Creates the log if needed.
              --segment-size sets the size of new segment files, in bytes or with a
              K, M or G suffix (default 64M).

dump, verify and stats are read-only and take no lock: they work on a live log, whose
tail may then show as torn.

Exit status: 0 success; 1 damage found or an append failed; 2 usage error, or the
directory cannot be opened as a log.
"
);

fn main() -> ExitCode {
    let args: Vec<OsString> = std::env::args_os().skip(1).collect();
    match run(&args) {
        Ok(code) => code,
        Err(failure) => {
            if !failure.message.is_empty() {
                eprintln!("wit: {}", failure.message);
            }
            if let Some(usage) = failure.usage {
                eprint!("\n{usage}");
            }
            ExitCode::from(failure.code)
        }
    }
}

/// Why a command did not succeed, and with which exit status.
#[derive(Debug)]
struct Failure {
    code: u8,
    message: String,
    /// Usage text to print after the message.
    usage: Option<&'static str>,
}

impl Failure {
    fn usage(message: impl Into<String>, usage: &'static str) -> Self {
        Failure {
            code: 2,
            message: message.into(),
            usage: Some(usage),
        }
    }

    /// The directory could not be opened (or read) as a log.
    fn open(error: wit_wal::Error) -> Self {
        Failure {
            code: 2,
            message: error.to_string(),
            usage: None,
        }
    }

    fn failed(message: impl Into<String>) -> Self {
        Failure {
            code: 1,
            message: message.into(),
            usage: None,
        }
    }
}

type CmdResult = Result<ExitCode, Failure>;

fn run(args: &[OsString]) -> CmdResult {
    let Some((command, rest)) = args.split_first() else {
        return Err(Failure::usage("missing command", USAGE));
    };
    match command.to_str() {
        Some("-h" | "--help" | "help") => print_usage(USAGE),
        Some("wal") => run_wal(rest),
        Some("query") => query::run_query(rest),
        Some("serve") => serve::run_serve(rest),
        Some("keys") => serve::run_keys(rest),
        _ => Err(Failure::usage(
            format!("unknown command `{}`", command.to_string_lossy()),
            USAGE,
        )),
    }
}

fn run_wal(args: &[OsString]) -> CmdResult {
    let Some((sub, rest)) = args.split_first() else {
        return Err(Failure::usage("missing `wal` subcommand", WAL_USAGE));
    };
    let (allowed, command): (&[&str], fn(WalArgs) -> CmdResult) = match sub.to_str() {
        Some("-h" | "--help" | "help") => return print_usage(WAL_HELP),
        Some("dump") => (&["--from", "--payload"], dump),
        Some("verify") => (&[], verify),
        Some("stats") => (&[], stats),
        Some("append") => (&["--segment-size"], append),
        _ => {
            return Err(Failure::usage(
                format!("unknown `wal` subcommand `{}`", sub.to_string_lossy()),
                WAL_USAGE,
            ));
        }
    };
    match WalArgs::parse(rest, allowed)? {
        Some(args) => command(args),
        None => print_usage(WAL_HELP),
    }
}

fn print_usage(usage: &str) -> CmdResult {
    print!("{usage}");
    Ok(ExitCode::SUCCESS)
}

/// The arguments of a `wit wal` subcommand.
#[derive(Debug)]
struct WalArgs {
    dir: PathBuf,
    from: Lsn,
    payload: bool,
    segment_size: Option<u64>,
}

impl WalArgs {
    /// Parses `<dir>` and the options in `allowed`; `None` when help was asked for.
    fn parse(args: &[OsString], allowed: &[&str]) -> Result<Option<Self>, Failure> {
        let mut dir = None;
        let mut parsed = WalArgs {
            dir: PathBuf::new(),
            from: Lsn(0),
            payload: false,
            segment_size: None,
        };
        let mut args = args.iter();
        let mut options_done = false;
        while let Some(arg) = args.next() {
            let text = arg.to_str().unwrap_or("");
            if options_done || !text.starts_with('-') || text == "-" {
                if dir.replace(PathBuf::from(arg)).is_some() {
                    return Err(Failure::usage(
                        format!("unexpected argument `{}`", arg.to_string_lossy()),
                        WAL_USAGE,
                    ));
                }
                continue;
            }
            if text == "--" {
                options_done = true;
                continue;
            }
            if text == "-h" || text == "--help" {
                return Ok(None);
            }
            let (name, inline_value) = match text.split_once('=') {
                Some((name, value)) => (name, Some(value.to_owned())),
                None => (text, None),
            };
            if !allowed.contains(&name) {
                return Err(Failure::usage(format!("unknown option `{text}`"), WAL_USAGE));
            }
            let mut value = || -> Result<String, Failure> {
                match inline_value
                    .clone()
                    .or_else(|| args.next().and_then(|v| v.to_str()).map(str::to_owned))
                {
                    Some(v) => Ok(v),
                    None => Err(Failure::usage(format!("option `{name}` needs a value"), WAL_USAGE)),
                }
            };
            match name {
                "--payload" if inline_value.is_none() => parsed.payload = true,
                "--from" => {
                    let v = value()?;
                    let lsn = v
                        .parse::<u64>()
                        .map_err(|_| Failure::usage(format!("`--from {v}`: expected an LSN (a number)"), WAL_USAGE))?;
                    parsed.from = Lsn(lsn);
                }
                "--segment-size" => {
                    let v = value()?;
                    let size = parse_size(&v).ok_or_else(|| {
                        Failure::usage(
                            format!("`--segment-size {v}`: expected a size such as 4194304 or 4M"),
                            WAL_USAGE,
                        )
                    })?;
                    parsed.segment_size = Some(size);
                }
                _ => return Err(Failure::usage(format!("option `{name}` takes no value"), WAL_USAGE)),
            }
        }
        parsed.dir = dir.ok_or_else(|| Failure::usage("missing <dir>", WAL_USAGE))?;
        Ok(Some(parsed))
    }
}

/// Parses `123`, `4K`, `64M`, `1G` (binary units; `KiB`, `MiB`, `GiB` are accepted too).
fn parse_size(text: &str) -> Option<u64> {
    let digits_end = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (digits, unit) = text.split_at(digits_end);
    let shift = match unit {
        "" => 0,
        "K" | "k" | "KiB" => 10,
        "M" | "MiB" => 20,
        "G" | "GiB" => 30,
        _ => return None,
    };
    digits.parse::<u64>().ok()?.checked_mul(1 << shift)
}

fn open_inspector(dir: &Path) -> Result<Inspector, Failure> {
    Inspector::open(dir).map_err(Failure::open)
}

/// Describes a place of damage: file, offset, LSN and reason.
fn describe(d: &Damage) -> String {
    format!(
        "file={} offset={} lsn={}: {}",
        d.path.display(),
        d.offset,
        d.lsn,
        d.reason
    )
}

/// `1 record`, `2 records`.
fn plural(n: u64, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

/// Ends a read-only command whose output could not be written. A closed pipe (`| head`) is
/// not a failure of the command.
/// Success if the output was written and the log is intact; 1 if it is damaged.
fn exit_status(written: io::Result<()>, intact: bool) -> CmdResult {
    written.map_err(output_error)?;
    Ok(if intact { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

fn output_error(e: io::Error) -> Failure {
    if e.kind() == io::ErrorKind::BrokenPipe {
        Failure {
            code: 0,
            message: String::new(),
            usage: None,
        }
    } else {
        Failure::failed(format!("cannot write to stdout: {e}"))
    }
}

fn dump(args: WalArgs) -> CmdResult {
    let inspector = open_inspector(&args.dir)?;
    let mut out = BufWriter::new(io::stdout().lock());
    let mut damaged = false;
    let result = (|| -> io::Result<()> {
        for item in inspector.scan(args.from) {
            match item {
                Item::Record(r) => {
                    let file = r.path.file_name().unwrap_or(r.path.as_os_str()).to_string_lossy();
                    let crc = if r.crc_ok { "ok" } else { "BAD" };
                    write!(
                        out,
                        "lsn={} len={} crc={crc} file={file} offset={}",
                        r.lsn,
                        r.payload.len(),
                        r.offset
                    )?;
                    if args.payload {
                        write!(out, " payload=\"{}\"", r.payload.escape_ascii())?;
                    }
                    writeln!(out)?;
                }
                Item::TornTail(d) => {
                    writeln!(
                        out,
                        "torn-tail {} (never acknowledged; the next open cuts it off)",
                        describe(&d)
                    )?;
                }
                Item::Problem(d) => {
                    damaged = true;
                    writeln!(out, "PROBLEM {}", describe(&d))?;
                }
                other => writeln!(out, "unknown item {other:?}")?,
            }
        }
        out.flush()
    })();
    exit_status(result, !damaged)
}

fn verify(args: WalArgs) -> CmdResult {
    let report = open_inspector(&args.dir)?.verify();
    let segments = report.segments as u64;
    let mut out = io::stdout().lock();
    let result = (|| -> io::Result<()> {
        let records = match (report.records, report.first_lsn) {
            (0, _) | (_, None) => "no records".to_owned(),
            (n, Some(first)) => format!("{}, LSNs {first}..={}", plural(n, "record"), report.next_lsn.0 - 1),
        };
        match &report.problem {
            None => writeln!(
                out,
                "ok: {}, {records}, next LSN {}",
                plural(segments, "segment"),
                report.next_lsn
            )?,
            Some(d) => {
                writeln!(out, "DAMAGED: {}", describe(d))?;
                writeln!(
                    out,
                    "intact before it: {records} ({} examined)",
                    plural(segments, "segment")
                )?;
            }
        }
        if let Some(d) = &report.torn_tail {
            writeln!(
                out,
                "torn tail {} (never acknowledged; the next open cuts it off)",
                describe(d)
            )?;
        }
        out.flush()
    })();
    exit_status(result, report.is_intact())
}

fn stats(args: WalArgs) -> CmdResult {
    let report = open_inspector(&args.dir)?.verify();
    // Sizes come from the directory listing: `Inspector` has checked that it holds only
    // segment, spare and lock files.
    let (mut spares, mut bytes) = (0usize, 0u64);
    let entries = std::fs::read_dir(&args.dir).map_err(|e| {
        Failure::open(wit_wal::Error::Io {
            op: "read WAL directory",
            path: args.dir.clone(),
            source: e,
        })
    })?;
    for entry in entries.flatten() {
        if let Ok(meta) = entry.metadata()
            && meta.is_file()
        {
            bytes += meta.len();
            spares += usize::from(entry.file_name().to_string_lossy().ends_with(".spare"));
        }
    }
    let lsn = |l: Option<Lsn>| l.map_or_else(|| "-".to_owned(), |l| l.to_string());
    let last = (report.records > 0).then(|| Lsn(report.next_lsn.0 - 1));
    let mut out = io::stdout().lock();
    let result = (|| -> io::Result<()> {
        writeln!(out, "directory       {}", args.dir.display())?;
        writeln!(out, "segments        {}", report.segments)?;
        writeln!(out, "spare segments  {spares}")?;
        writeln!(out, "records         {}", report.records)?;
        writeln!(out, "first LSN       {}", lsn(report.first_lsn))?;
        writeln!(out, "last LSN        {}", lsn(last))?;
        writeln!(out, "next LSN        {}", report.next_lsn)?;
        writeln!(
            out,
            "bytes on disk   {bytes} ({:.1} MiB)",
            bytes as f64 / (1 << 20) as f64
        )?;
        let torn = report.torn_tail.as_ref().map_or_else(|| "none".to_owned(), describe);
        writeln!(out, "torn tail       {torn}")?;
        let damage = report.problem.as_ref().map_or_else(|| "none".to_owned(), describe);
        writeln!(out, "damage          {damage}")?;
        out.flush()
    })();
    exit_status(result, report.is_intact())
}

/// Commits submitted but not yet acknowledged; reading stdin pauses when this many are.
const MAX_IN_FLIGHT: usize = 4096;

/// Appends stdin's lines. The main thread reads and submits without waiting for
/// durability, so every line already read joins the next group commit; a second thread
/// waits for each commit in submission (and so LSN) order and prints its LSN only after
/// `wait()` returned `Ok`.
fn append(args: WalArgs) -> CmdResult {
    let mut config = Config::default();
    if let Some(size) = args.segment_size {
        config = config.with_segment_size(size);
    }
    let wal = Wal::open(&args.dir, config).map_err(Failure::open)?;
    if let Some(torn) = &wal.recovery().torn_tail {
        eprintln!(
            "wit: recovery cut off a torn tail (never acknowledged): {}",
            describe(torn)
        );
    }

    let (tx, rx) = mpsc::sync_channel::<Commit>(MAX_IN_FLIGHT);
    let (read, acknowledged) = std::thread::scope(|s| {
        let printer = s.spawn(move || acknowledge(rx));
        let read = read_and_submit(&wal, tx);
        // The sender is gone: the printer drains what is in flight and returns.
        let acknowledged = printer
            .join()
            .unwrap_or_else(|_| Err(Failure::failed("the acknowledging thread panicked")));
        (read, acknowledged)
    });
    let closed = wal
        .close()
        .map_err(|e| Failure::failed(format!("closing the log failed: {e}")));

    // Report the first failure; records acknowledged before it stay acknowledged.
    let count = acknowledged?;
    let submitted = read?;
    closed?;
    if count != submitted {
        return Err(Failure::failed(format!(
            "{submitted} records submitted but only {count} acknowledged"
        )));
    }
    eprintln!("wit: appended {} to {}", plural(count, "record"), args.dir.display());
    Ok(ExitCode::SUCCESS)
}

/// Reads stdin line by line and submits each line; returns how many were submitted.
fn read_and_submit(wal: &Wal, tx: mpsc::SyncSender<Commit>) -> Result<u64, Failure> {
    let mut stdin = io::stdin().lock();
    let mut line = Vec::new();
    let mut submitted = 0u64;
    loop {
        line.clear();
        let n = stdin
            .read_until(b'\n', &mut line)
            .map_err(|e| Failure::failed(format!("cannot read stdin: {e}")))?;
        if n == 0 {
            return Ok(submitted);
        }
        if line.last() == Some(&b'\n') {
            line.pop();
        }
        let commit = wal
            .submit(&line)
            .map_err(|e| Failure::failed(format!("cannot append line {}: {e}", submitted + 1)))?;
        submitted += 1;
        if tx.send(commit).is_err() {
            // The printer stopped on an error, which it reports.
            return Ok(submitted);
        }
    }
}

/// Waits for each commit in order and prints its LSNs; returns how many were acknowledged.
fn acknowledge(rx: mpsc::Receiver<Commit>) -> Result<u64, Failure> {
    let mut out = BufWriter::new(io::stdout().lock());
    let mut count = 0u64;
    let mut next = rx.recv().ok();
    while let Some(commit) = next.take() {
        let lsns = commit
            .wait()
            .map_err(|e| Failure::failed(format!("append failed: {e}")))?;
        for lsn in lsns.iter() {
            writeln!(out, "{lsn}").map_err(|e| Failure::failed(format!("cannot write to stdout: {e}")))?;
            count += 1;
        }
        // Flush now unless the next commit is durable too (one group): then its line follows.
        next = match rx.try_recv() {
            Ok(commit) if commit.is_durable() => Some(commit),
            Ok(commit) => {
                flush(&mut out)?;
                Some(commit)
            }
            Err(mpsc::TryRecvError::Empty) => {
                flush(&mut out)?;
                rx.recv().ok()
            }
            Err(mpsc::TryRecvError::Disconnected) => None,
        };
    }
    flush(&mut out)?;
    Ok(count)
}

fn flush(out: &mut impl Write) -> Result<(), Failure> {
    out.flush()
        .map_err(|e| Failure::failed(format!("cannot write to stdout: {e}")))
}
