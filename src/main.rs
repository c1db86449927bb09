//! The `streamtally` command: parse the command line, load the configuration, call into the
//! library (`streamtally::cli` holds the commands' bodies), map errors to exit codes (0 ok,
//! 1 a check found problems, 2 bad input or config, and any other error on the way).

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;
use streamtally::cli;
use streamtally::config::{Config, ConfigSource, LogFormat};
use streamtally::schema::Schema;

#[derive(Parser)]
#[command(
    name = "streamtally",
    version,
    about = "Kafka-compatible ingestion connector for product-analytics events, backed by an embedded ORMDB store",
    long_about = "Configuration layers: built-in defaults < connector.toml (or --config FILE) < \
                  environment STREAMTALLY__SECTION__KEY < command-line flags."
)]
struct Cli {
    /// Configuration file (default: ./connector.toml if it exists).
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Store directory (overrides store.path). demo: keep the store here (default: a
    /// temporary directory, removed on exit).
    #[arg(long, global = true, value_name = "DIR")]
    data: Option<PathBuf>,
    /// Kafka bootstrap servers (overrides kafka.brokers). demo: use this broker instead of
    /// the embedded one.
    #[arg(long, global = true, value_name = "HOST:PORT,...")]
    brokers: Option<String>,
    /// Any setting as a dotted key, e.g. --set batching.max_batch_events=500 (repeatable).
    #[arg(long = "set", global = true, value_name = "KEY=VALUE")]
    set: Vec<String>,
    /// Schema file (default: ./schema.ormdb if it exists, else the built-in copy).
    #[arg(long, global = true, value_name = "FILE")]
    schema: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the connector: consume the configured topics into the store, exactly once,
    /// until SIGINT/SIGTERM (then flush, commit offsets and exit 0).
    Run,
    /// Send events to a topic: NDJSON from a file or stdin (each line as-is, invalid ones
    /// included), or synthetic seed-shaped events. Uses kafka.brokers and [kafka.client].
    Produce(ProduceArgs),
    /// Try it in one command: an embedded Kafka-protocol broker (librdkafka's mock cluster,
    /// on a free 127.0.0.1 port), synthetic events, the connector, the stats workers and the
    /// gateway with the dashboard, in this process. Prints the dashboard URL, a token per
    /// demo org and the broker's address; Ctrl-C stops it cleanly. Uses the configuration
    /// (connector.toml, environment) except kafka.brokers (only --brokers picks a broker),
    /// kafka.topics (topic "events"), kafka.group_id ("streamtally-demo") and store.path
    /// (only --data).
    Demo(DemoArgs),
    /// Print the effective configuration (secrets masked), or every configuration error.
    CheckConfig,
    /// Parse the schema file and print its entities, or the error with line:column.
    CheckSchema,
    /// Store maintenance.
    Store {
        #[command(subcommand)]
        command: StoreCommand,
    },
    /// Rollup maintenance (run with the connector stopped: the store is opened exclusively).
    Stats {
        #[command(subcommand)]
        command: StatsCommand,
    },
    /// Stored events: delete a person's events (GDPR Art. 17).
    Events {
        #[command(subcommand)]
        command: EventsCommand,
    },
    /// Gateway API tokens.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// Dead letters: what a dead-letter topic holds, and sending chosen ones back to their
    /// source topic (read from the topic's start; no consumer group, nothing committed).
    Dlq {
        #[command(subcommand)]
        command: DlqCommand,
    },
}

#[derive(Subcommand)]
enum DlqCommand {
    /// Count the dead letters by reason (first and last time, samples) and by source
    /// partition.
    List {
        /// The dead-letter topic (default: each configured one: kafka.dead_letter.topic, or
        /// every kafka.topics entry plus kafka.dead_letter.topic_suffix).
        #[arg(long)]
        topic: Option<String>,
        /// Samples shown per reason.
        #[arg(long, value_name = "N", default_value_t = 1)]
        samples: usize,
    },
    /// Send dead letters back: key, value and headers as they were (without the
    /// dead-letter headers), plus `streamtally.replayed_from: <topic>/<partition>/<offset>`.
    /// An event whose payload has an id is stored at most once however often it is
    /// replayed within store.dedup_window (default 24 h); the summary counts those
    /// without one. Envelopes (records too big to
    /// dead-letter whole) are skipped.
    Replay {
        /// The dead-letter topic (default: each configured one).
        #[arg(long)]
        topic: Option<String>,
        /// Only these reason codes (repeatable; `dlq list` shows them), e.g. oversized.
        #[arg(long = "reason", value_name = "CODE")]
        reasons: Vec<String>,
        /// Only those dead-lettered at or after this time (RFC 3339 or epoch ms).
        #[arg(long, value_name = "TIME")]
        since: Option<String>,
        /// Only those dead-lettered before this time (RFC 3339 or epoch ms).
        #[arg(long, value_name = "TIME")]
        until: Option<String>,
        /// Only those from this source partition.
        #[arg(long, value_name = "P")]
        partition: Option<i32>,
        /// Only those from these source offsets, inclusive: FIRST..LAST (or one offset).
        #[arg(long, value_name = "FIRST..LAST")]
        offsets: Option<String>,
        /// Send to this topic instead of each record's source topic.
        #[arg(long, value_name = "TOPIC")]
        to_topic: Option<String>,
        /// Count what would be sent; send nothing.
        #[arg(long)]
        dry_run: bool,
    },
}

#[derive(clap::Args)]
struct ProduceArgs {
    /// Topic to write to.
    #[arg(long)]
    topic: String,
    /// Records per second (default: as fast as the broker takes them).
    #[arg(long)]
    rate: Option<u64>,
    /// Stop after N records (synthetic mode default: until Ctrl-C).
    #[arg(long)]
    events: Option<u64>,
    /// Number of orgs in synthetic events.
    #[arg(long, default_value_t = 20)]
    orgs: usize,
    /// Create the topic with P partitions if it does not exist.
    #[arg(long)]
    partitions: Option<i32>,
    /// Seed of the synthetic generator.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// NDJSON file, or - for stdin; omit for synthetic events.
    input: Option<PathBuf>,
}

#[derive(clap::Args)]
struct DemoArgs {
    /// Live events per second, over all demo orgs (1..=100000).
    #[arg(long, value_name = "EVENTS_PER_S", default_value_t = 500,
          value_parser = clap::value_parser!(u64).range(1..=100_000))]
    rate: u64,
    /// Number of demo orgs (1..=100); each gets a random token, printed at start.
    #[arg(long, value_name = "N", default_value_t = 3,
          value_parser = clap::value_parser!(u64).range(1..=100))]
    orgs: u64,
    /// Before going live, produce events spread over the last DAYS days in a daily rhythm
    /// (quiet nights, busy afternoons UTC, quieter weekends), so the charts have history;
    /// 0 = none (0..=90).
    #[arg(long, value_name = "DAYS", default_value_t = 7,
          value_parser = clap::value_parser!(u32).range(0..=90))]
    backfill_days: u32,
    /// Backfilled events per day, averaged over a week (1..=1000000).
    #[arg(long, value_name = "N", default_value_t = 20_000,
          value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    backfill_events_per_day: u64,
    /// Gateway address (default: gateway.listen from the configuration, 127.0.0.1:8080
    /// unless changed); port 0 picks a free port (the printed URL has the real one).
    #[arg(long, value_name = "ADDR")]
    listen: Option<std::net::SocketAddr>,
    /// Keep the temporary store directory on exit (its path is printed). A --data
    /// directory is always kept.
    #[arg(long)]
    keep: bool,
    /// Seed of the generator's choices (orgs, users, event names, properties, backfill
    /// times); default: random. Event ids are random in every run.
    #[arg(long, value_name = "N")]
    seed: Option<u64>,
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Print a new random token (32 bytes, base64url) for an org and the `[[auth.tokens]]`
    /// entry to add to connector.toml (it holds only the token's SHA-256).
    New {
        /// The org the token may read (a UUID).
        #[arg(long, value_name = "UUID")]
        org: String,
        /// A label for operators (who or what holds the token).
        #[arg(long, value_name = "NAME")]
        name: Option<String>,
    },
}

#[derive(Subcommand)]
enum StatsCommand {
    /// Recompute HourlyStats, DailyStats and EventNameDaily from the raw events and swap
    /// them in with one atomic write (pending changes in the feed are applied first). Rows
    /// are kept per source partition when scale_out.enabled is true; a rebuild of every org
    /// and day switches the store to that keying.
    Rebuild(StatsScopeArgs),
    /// Recompute the rollups and report every difference from the stored ones (pending
    /// changes in the feed are applied first). Exit code 1 if anything differs.
    Verify(StatsScopeArgs),
}

#[derive(clap::Args)]
struct StatsScopeArgs {
    /// Only this org (a UUID).
    #[arg(long, value_name = "UUID")]
    org: Option<String>,
    /// First UTC date (YYYY-MM-DD), inclusive.
    #[arg(long, value_name = "DATE")]
    from: Option<String>,
    /// Last UTC date (YYYY-MM-DD), inclusive.
    #[arg(long, value_name = "DATE")]
    to: Option<String>,
}

impl StatsScopeArgs {
    fn scope(&self) -> anyhow::Result<streamtally::stats::rebuild::Scope> {
        cli::stats::scope(
            self.org.as_deref(),
            self.from.as_deref(),
            self.to.as_deref(),
        )
    }
}

#[derive(Subcommand)]
enum StoreCommand {
    /// Open the store (replaying its write-ahead log) and check that every index agrees with
    /// the rows and the change feed is contiguous. Exit code 1 if anything is wrong.
    Verify,
    /// Print what the store holds: row counts per entity, consumer offsets, feed position,
    /// disk use by kind (blocks, write-ahead log, database, change feed; live rows of the
    /// block catalog and of the rollups), the oldest and newest event time, the retention
    /// cutoff, and event blocks per org and day (from the catalog: no event read).
    Info,
    /// Move the events of a store written before they were kept in blocks (one ORMDB row per
    /// event) into blocks, with a progress bar, then verify the store. Opening the store
    /// does the same (run does it too, before it starts consuming); this shows progress.
    /// Safe to interrupt: every event stays stored once and a rerun continues. Exit code 1
    /// if verify finds problems.
    Migrate,
    /// Write a consistent copy of the store to DIR (new or empty), which opens as a store of
    /// its own: block files hard-linked (copied across filesystems), the database and
    /// write-ahead log copied during a short pause of writes. With the connector running it
    /// goes through its admin API (gateway.listen; admin token from --token or
    /// STREAMTALLY_ADMIN_TOKEN), else on the stopped store. Restore: stop the connector, point
    /// store.path at the copy (or move it in place), start it: it resumes from the copy's
    /// stored positions, nothing lost or stored twice.
    Backup {
        /// Directory to write the copy to (must not exist, or be empty).
        dir: PathBuf,
        /// The admin token, for a running connector (else STREAMTALLY_ADMIN_TOKEN).
        #[arg(long)]
        token: Option<String>,
    },
}

#[derive(Subcommand)]
enum EventsCommand {
    /// Delete every stored event of one user in one org, in one atomic write (blocks
    /// rewritten without them); the stats workers take them out of the rollups (days with
    /// unique sets recomputed) and the real-time counters. Prints how many. With the connector
    /// running it goes through its admin API (admin token from --token or
    /// STREAMTALLY_ADMIN_TOKEN), else on the stopped store (the rollups are corrected there
    /// and then). Events of that user that arrive later are stored as usual.
    Delete {
        /// The org id (UUID).
        #[arg(long)]
        org: String,
        /// The user id, as the events carry it.
        #[arg(long)]
        user: String,
        /// Only count what would be deleted.
        #[arg(long)]
        dry_run: bool,
        /// The admin token, for a running connector (else STREAMTALLY_ADMIN_TOKEN).
        #[arg(long)]
        token: Option<String>,
    },
}

fn load_config(cli: &Cli) -> Result<Config, streamtally::config::ConfigError> {
    let mut src = ConfigSource::with_process_env(cli.config.clone());
    if let Some(d) = &cli.data {
        src.overrides
            .push(("store.path".into(), d.to_string_lossy().into_owned()));
    }
    if let Some(b) = &cli.brokers {
        src.overrides.push(("kafka.brokers".into(), b.clone()));
    }
    for kv in &cli.set {
        let (k, v) = kv.split_once('=').unwrap_or((kv.as_str(), ""));
        src.overrides.push((k.trim().to_string(), v.to_string()));
    }
    Config::load(&src)
}

fn load_schema(cli: &Cli) -> anyhow::Result<Schema> {
    cli::load_schema(cli.schema.as_deref())
}

fn init_tracing(cfg: &Config) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&cfg.log.level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match cfg.log.format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

fn main() -> ExitCode {
    streamtally::tune_c_allocator();
    let cli = Cli::parse();
    let cfg = match load_config(&cli) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("streamtally: configuration error:\n{e}");
            return ExitCode::from(2);
        }
    };
    init_tracing(&cfg);
    match run(&cli, cfg) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("streamtally: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// Calls the command's body; an `Err` is printed by `main` (exit code 2).
fn run(cli: &Cli, cfg: Config) -> anyhow::Result<ExitCode> {
    let out = &mut std::io::stdout();
    match &cli.command {
        Command::Run => {
            streamtally::app::run(cfg, load_schema(cli)?)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Produce(args) => {
            cli::produce::produce(&produce_options(args, &cfg), out, &mut std::io::stderr())
        }
        Command::Demo(args) => {
            let schema = load_schema(cli)?;
            streamtally::demo::run(cfg, schema, &demo_options(cli, args), out)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::CheckConfig => cli::check::check_config(&cfg, out),
        Command::CheckSchema => cli::check::check_schema(&load_schema(cli)?, out),
        Command::Store { command } => {
            let schema = load_schema(cli)?;
            match command {
                StoreCommand::Verify => cli::store::verify(&cfg, &schema, out),
                StoreCommand::Info => cli::store::info(&cfg, &schema, out),
                StoreCommand::Migrate => cli::store::migrate(&cfg, &schema, out),
                StoreCommand::Backup { dir, token } => {
                    cli::admin::backup(&cfg, &schema, dir, token.as_deref(), out)
                }
            }
        }
        Command::Events {
            command:
                EventsCommand::Delete {
                    org,
                    user,
                    dry_run,
                    token,
                },
        } => cli::admin::delete_user_events(
            &cfg,
            &load_schema(cli)?,
            org,
            user,
            *dry_run,
            token.as_deref(),
            out,
        ),
        Command::Token {
            command: TokenCommand::New { org, name },
        } => cli::token::new_token(org, name.as_deref(), out),
        Command::Dlq {
            command: DlqCommand::List { topic, samples },
        } => cli::dlq::list(&cfg, topic.as_deref(), *samples, out),
        Command::Dlq {
            command:
                DlqCommand::Replay {
                    topic,
                    reasons,
                    since,
                    until,
                    partition,
                    offsets,
                    to_topic,
                    dry_run,
                },
        } => {
            let filter = streamtally::dlq::Filter {
                reasons: reasons.clone(),
                since_ms: since
                    .as_deref()
                    .map(|t| time_ms("--since", t))
                    .transpose()?,
                until_ms: until
                    .as_deref()
                    .map(|t| time_ms("--until", t))
                    .transpose()?,
                source_partition: *partition,
                source_offsets: offsets.as_deref().map(offset_range).transpose()?,
            };
            cli::dlq::replay(
                &cfg,
                topic.as_deref(),
                &filter,
                to_topic.as_deref(),
                *dry_run,
                out,
            )
        }
        Command::Stats { command } => {
            let (args, action) = match command {
                StatsCommand::Rebuild(a) => (a, cli::stats::Action::Rebuild),
                StatsCommand::Verify(a) => (a, cli::stats::Action::Verify),
            };
            let scope = args.scope()?;
            let schema = load_schema(cli)?;
            cli::stats::run(&cfg, &schema, &scope, action, out)
        }
    }
}

/// A time flag: RFC 3339 or epoch milliseconds.
fn time_ms(flag: &str, v: &str) -> anyhow::Result<i64> {
    if let Ok(ms) = v.parse::<i64>() {
        return Ok(ms);
    }
    chrono::DateTime::parse_from_rfc3339(v)
        .map(|t| t.timestamp_millis())
        .map_err(|_| anyhow::anyhow!("{flag} {v:?}: not an RFC 3339 time or epoch milliseconds"))
}

/// `--offsets FIRST..LAST` (inclusive) or one offset.
fn offset_range(v: &str) -> anyhow::Result<(i64, i64)> {
    let bad = || anyhow::anyhow!("--offsets {v:?}: expected FIRST..LAST (inclusive) or one offset");
    let (a, b) = v.split_once("..").unwrap_or((v, v));
    let (a, b): (i64, i64) = (
        a.trim().parse().map_err(|_| bad())?,
        b.trim().parse().map_err(|_| bad())?,
    );
    if a > b || a < 0 {
        return Err(bad());
    }
    Ok((a, b))
}

/// `streamtally produce`'s flags over kafka.brokers and [kafka.client].
fn produce_options(args: &ProduceArgs, cfg: &Config) -> streamtally::produce::ProduceOptions {
    let ProduceArgs {
        topic,
        rate,
        events,
        orgs,
        partitions,
        seed,
        input,
    } = args;
    let mut opts = streamtally::produce::ProduceOptions::new(&cfg.kafka.brokers, topic);
    opts.client = cfg.kafka.client.clone();
    opts.rate_per_s = *rate;
    opts.events = *events;
    opts.orgs = *orgs;
    opts.partitions = *partitions;
    opts.seed = *seed;
    opts.input = input.clone();
    opts.progress = true;
    opts
}

/// `streamtally demo`'s flags and the global --brokers and --data.
fn demo_options(cli: &Cli, args: &DemoArgs) -> streamtally::demo::DemoOptions {
    streamtally::demo::DemoOptions {
        rate_per_s: args.rate,
        orgs: args.orgs as usize,
        backfill_days: args.backfill_days,
        backfill_events_per_day: args.backfill_events_per_day,
        brokers: cli.brokers.clone(),
        data: cli.data.clone(),
        keep: args.keep,
        listen: args.listen,
        seed: args.seed,
        program: std::env::args()
            .next()
            .unwrap_or_else(|| "streamtally".into()),
    }
}
