//! The command line: `crm-responder [--config PATH] [COMMAND]`.

use std::io::{BufRead, IsTerminal};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

use crate::app::Application;
use crate::config::Config;
use crate::store::apply::Policy;
use crate::store::{Db, Location};

/// Webhook responder and CRM for JivoChat, Rocket.Chat and LiveChat.
#[derive(Debug, Parser)]
#[command(name = "crm-responder", version)]
pub struct Cli {
    /// The configuration file.
    #[arg(long, global = true, default_value = "config.toml")]
    pub config: PathBuf,
    /// Log format: readable text, or JSON lines for log shippers.
    #[arg(long, global = true, value_enum, default_value = "text")]
    pub log_format: LogFormat,
    /// What to do (default: serve).
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// Log output format.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the HTTP service until SIGINT or SIGTERM (SIGHUP reloads the config).
    Serve,
    /// Validate the config and print the effective settings, secrets redacted.
    CheckConfig,
    /// Read a password from stdin and print a hash for [[sales.users]].
    HashPassword,
    /// Import leads from a CSV file (header row; `,` or `;`; UTF-8).
    Import {
        /// The CSV file.
        file: PathBuf,
    },
    /// Write every lead with its contacts and custom fields.
    Export {
        /// csv (readable by `import`) or jsonl.
        #[arg(long, value_enum, default_value = "csv")]
        format: crate::ops::export::Format,
        /// Write here instead of stdout.
        #[arg(long)]
        output: Option<PathBuf>,
    },
    /// Re-apply stored raw deliveries (idempotent).
    Replay {
        /// Only deliveries stored as failed (the default).
        #[arg(long, conflicts_with = "all")]
        failed: bool,
        /// Every delivery, oldest first.
        #[arg(long)]
        all: bool,
        /// Only deliveries received at or after this date or RFC 3339 time.
        #[arg(long, value_parser = crate::ops::replay::parse_since)]
        since: Option<String>,
        /// Read deliveries from this database instead.
        #[arg(long)]
        from: Option<PathBuf>,
    },
    /// Show what one delivery would do against the database, writing nothing.
    Explain {
        /// The webhook body (JSON).
        file: PathBuf,
        /// The platform (default: told from the body's envelope).
        #[arg(long, value_enum)]
        platform: Option<PlatformArg>,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Replay stored deliveries under the current and a new merge policy into
    /// scratch databases and show what the new policy would change.
    Preview {
        /// The configuration with the new policy.
        #[arg(long = "new-config", value_name = "NEW.toml")]
        new_config: PathBuf,
        /// Only the last N deliveries.
        #[arg(long, conflicts_with = "since")]
        last: Option<u64>,
        /// Only deliveries received at or after this date or RFC 3339 time.
        #[arg(long, value_parser = crate::ops::replay::parse_since)]
        since: Option<String>,
        /// Print JSON (every differing lead) instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Copy the live database to PATH (online backup API), then check the copy.
    Backup {
        /// Where to write the copy.
        path: PathBuf,
        /// Overwrite PATH if it exists.
        #[arg(long)]
        force: bool,
    },
    /// API tokens for scripts (`Authorization: Bearer TOKEN`).
    Token {
        /// What to do with tokens.
        #[command(subcommand)]
        action: TokenCommand,
    },
    /// Copy the configured SQLite database into an empty PostgreSQL
    /// database (schema, every row, id sequences), in one transaction,
    /// then check the copy; a non-empty target is refused.
    MigrateStore {
        /// The target: postgres://user:password@host/database.
        #[arg(long, value_name = "URL")]
        to: String,
    },
    /// Erase a person for good: their leads (and every lead folded into
    /// them), contacts, conversations, notes, history and raw deliveries,
    /// in the database and the spool; keyed hashes of their identifiers
    /// stay, so that replay, import and migrate-store skip their old data.
    #[command(group(clap::ArgGroup::new("who").required(true).args(["lead", "email", "phone"])))]
    Erase {
        /// A lead id.
        #[arg(long)]
        lead: Option<i64>,
        /// An email.
        #[arg(long)]
        email: Option<String>,
        /// A phone, in any format.
        #[arg(long)]
        phone: Option<String>,
        /// Do not ask (for scripts).
        #[arg(long)]
        yes: bool,
    },
    /// Print everything held on a person as one JSON document (a subject
    /// access request).
    #[command(group(clap::ArgGroup::new("who").required(true).args(["lead", "email", "phone"])))]
    ExportPerson {
        /// A lead id.
        #[arg(long)]
        lead: Option<i64>,
        /// An email.
        #[arg(long)]
        email: Option<String>,
        /// A phone, in any format.
        #[arg(long)]
        phone: Option<String>,
        /// Write here instead of stdout.
        #[arg(long)]
        output: Option<PathBuf>,
    },
    /// Outbound webhooks ([[outbound]]): status, replay, enable.
    Outbound {
        /// What to do.
        #[command(subcommand)]
        action: crate::ops::outbound::OutboundCommand,
    },
    /// Print the audit log (who did what, when, from where) from a date on.
    Audit {
        /// Entries made at or after this date or RFC 3339 time.
        #[arg(long, value_parser = crate::ops::replay::parse_since)]
        since: String,
        /// Print JSON lines instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Delete what [retention] and [audit] keep_days say is too old, once.
    Retention {
        /// Only print what would be deleted (counts and cut-off dates).
        #[arg(long)]
        dry_run: bool,
    },
}

/// `crm-responder token …`
#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Create a token; it is printed once, alone on the last line of stdout.
    Create {
        /// The token's name (letters, digits, `.`, `_`, `-`).
        name: String,
        /// What it may do: read (a viewer), write (sales), admin.
        #[arg(long, value_enum)]
        scope: ScopeArg,
    },
    /// List the tokens: name, scope, created, last used (never the token).
    List,
    /// Revoke a token: requests with it are refused from now on.
    Revoke {
        /// The token's name.
        name: String,
    },
}

/// A token scope named on the command line.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum ScopeArg {
    /// Reads leads.
    Read,
    /// Works leads.
    Write,
    /// Everything, admin included.
    Admin,
}

impl From<ScopeArg> for crate::staff::Scope {
    fn from(s: ScopeArg) -> Self {
        match s {
            ScopeArg::Read => crate::staff::Scope::Read,
            ScopeArg::Write => crate::staff::Scope::Write,
            ScopeArg::Admin => crate::staff::Scope::Admin,
        }
    }
}

/// A platform named on the command line.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum PlatformArg {
    /// JivoChat.
    Jivo,
    /// Rocket.Chat Omnichannel.
    Rocketchat,
    /// LiveChat.
    Livechat,
}

impl From<PlatformArg> for crate::event::Platform {
    fn from(p: PlatformArg) -> Self {
        match p {
            PlatformArg::Jivo => crate::event::Platform::Jivo,
            PlatformArg::Rocketchat => crate::event::Platform::RocketChat,
            PlatformArg::Livechat => crate::event::Platform::LiveChat,
        }
    }
}

/// Sets up logging: `RUST_LOG` filters (default `info`), text or JSON.
pub fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"))
        // tokio-postgres logs each statement's parameters at debug level:
        // payloads, personal data, any secret a body carries. Never below
        // info, whatever RUST_LOG asks for.
        .add_directive("tokio_postgres=info".parse().expect("a valid directive"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}

/// Runs the parsed command line.
pub fn run(cli: Cli) -> ExitCode {
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => serve(&cli.config),
        Command::CheckConfig => check_config(&cli.config),
        Command::HashPassword => hash_password(),
        Command::Import { file } => {
            let key = match load(&cli.config) {
                Ok(config) => crate::privacy::Key::of(&config),
                Err(code) => return code,
            };
            ops_command(&cli.config, |db, policy| async move {
                crate::ops::import::run(&db, &policy, &file, key)
                    .await
                    .map(|s| print_import(&file, &s))
            })
        }
        Command::Export { format, output } => ops_command(&cli.config, |db, _| async move {
            let out: Box<dyn std::io::Write + Send> = match &output {
                Some(path) => Box::new(
                    std::fs::File::create(path).map_err(|e| format!("{}: {e}", path.display()))?,
                ),
                None => Box::new(std::io::stdout()),
            };
            let n = crate::ops::export::run(&db, format, out)
                .await
                .map_err(|e| e.to_string())?;
            let what = format!("{n} leads as {}", format.as_str());
            db.audit(crate::audit::Entry::by_cli(
                crate::audit::action::EXPORT,
                Some(what),
            ))
            .await
            .map_err(|e| e.to_string())?;
            eprintln!("exported {n} leads");
            Ok(ExitCode::SUCCESS)
        }),
        Command::Replay {
            failed: _,
            all,
            since,
            from,
        } => {
            let key = match load(&cli.config) {
                Ok(config) => crate::privacy::Key::of(&config),
                Err(code) => return code,
            };
            let selection = crate::ops::replay::Selection {
                failed_only: !all,
                since,
                from: from.map(crate::ops::replay::Source::File),
                last: None,
                key,
            };
            ops_command(&cli.config, |db, policy| async move {
                let s = crate::ops::replay::run(&db, &policy, &selection).await?;
                println!(
                    "replayed {} deliveries: {} applied ({} leads created, {} merged), {} unchanged, {} still failing, {} skipped (people erased since)",
                    s.seen,
                    s.applied,
                    s.created,
                    s.merged,
                    s.unchanged,
                    s.failed.len(),
                    s.skipped
                );
                for (id, reason) in &s.failed {
                    println!("delivery {id}: {reason}");
                }
                Ok(ExitCode::SUCCESS)
            })
        }
        Command::Explain {
            file,
            platform,
            json,
        } => match load(&cli.config) {
            Ok(config) => {
                crate::ops::explain::command(&config, &file, platform.map(Into::into), json)
            }
            Err(code) => code,
        },
        Command::Preview {
            new_config,
            last,
            since,
            json,
        } => match (load(&cli.config), load(&new_config)) {
            (Ok(current), Ok(new)) => {
                crate::ops::preview::command(&current, &new, last, since, json)
            }
            (Err(code), _) | (_, Err(code)) => code,
        },
        Command::Token { action } => ops_command(&cli.config, |db, _| async move {
            token_command(&db, action).await
        }),
        Command::Outbound { action } => match load(&cli.config) {
            Ok(config) => ops_command(&cli.config, |db, _| async move {
                crate::ops::outbound::command(&db, &config, action).await
            }),
            Err(code) => code,
        },
        Command::MigrateStore { to } => match load(&cli.config) {
            Ok(config) => crate::ops::migrate_store::command(&config, &to),
            Err(code) => code,
        },
        Command::Erase {
            lead,
            email,
            phone,
            yes,
        } => {
            let config = match load(&cli.config) {
                Ok(c) => c,
                Err(code) => return code,
            };
            let region = config.merge.default_region;
            let subject = match crate::ops::erase::subject(
                lead,
                email.as_deref(),
                phone.as_deref(),
                region,
            ) {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::from(2);
                }
            };
            let Some(key) = crate::privacy::Key::of(&config) else {
                eprintln!(
                    "error: [privacy] secret is not set: erasure keeps keyed hashes and needs it"
                );
                return ExitCode::from(2);
            };
            let spool = match crate::spool::Spool::open(&config.database.spool_dir()) {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("error: spool: {e}");
                    return ExitCode::from(1);
                }
            };
            ops_command(&cli.config, |db, _| async move {
                crate::ops::erase::command(&db, &spool, key, region, subject, yes).await
            })
        }
        Command::ExportPerson {
            lead,
            email,
            phone,
            output,
        } => ops_command(&cli.config, |db, policy| async move {
            let region = policy.merge.default_region;
            let subject =
                crate::ops::erase::subject(lead, email.as_deref(), phone.as_deref(), region)?;
            let Some(document) = db
                .export_person(subject, region)
                .await
                .map_err(|e| e.to_string())?
            else {
                return Err("nothing is held on that person".into());
            };
            let target = crate::http::api::privacy::exported(&document);
            db.audit(crate::audit::Entry::by_cli(
                crate::audit::action::EXPORT_PERSON,
                Some(target),
            ))
            .await
            .map_err(|e| e.to_string())?;
            let text = serde_json::to_string_pretty(&document).map_err(|e| e.to_string())?;
            match &output {
                Some(path) => std::fs::write(path, text + "\n")
                    .map_err(|e| format!("{}: {e}", path.display()))?,
                None => println!("{text}"),
            }
            Ok(ExitCode::SUCCESS)
        }),
        Command::Audit { since, json } => ops_command(&cli.config, |db, _| async move {
            let n =
                crate::ops::audit_log::command(&db, &since, json, &mut std::io::stdout()).await?;
            eprintln!("{n} audit entries since {since}");
            Ok(ExitCode::SUCCESS)
        }),
        Command::Retention { dry_run } => match load(&cli.config) {
            Ok(config) => ops_command(&cli.config, |db, _| async move {
                crate::ops::retention::command(&db, &config, dry_run, &mut std::io::stdout())
                    .await?;
                Ok(ExitCode::SUCCESS)
            }),
            Err(code) => code,
        },
        Command::Backup { path, force } => {
            let config = match load(&cli.config) {
                Ok(c) => c,
                Err(code) => return code,
            };
            if let crate::config::Store::Postgres(url) = config.database.store() {
                eprintln!(
                    "error: backup copies the SQLite file; on PostgreSQL use pg_dump:\n  \
                     pg_dump --format=custom --file={} '{}'",
                    path.display(),
                    url.redacted()
                );
                return ExitCode::from(2);
            }
            match crate::ops::backup::run(&config.database.path, &path, force) {
                Ok(report) => {
                    println!("backup {}: integrity_check {report}", path.display());
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::from(1)
                }
            }
        }
    }
}

/// Runs an operator command on the configured database and policy.
fn ops_command<F, Fut>(path: &Path, f: F) -> ExitCode
where
    F: FnOnce(Db, Policy) -> Fut,
    Fut: std::future::Future<Output = Result<ExitCode, String>>,
{
    let config = match load(path) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let db = {
        let _runtime = runtime.enter();
        match Db::connect(&Location::of(&config.database)) {
            Ok(db) => db,
            Err(e) => {
                eprintln!("error: database ({}): {e}", config.database.describe());
                return ExitCode::from(1);
            }
        }
    };
    // What the command writes is forwarded as the service's writes are.
    db.subscribe(&config.outbound);
    let result = runtime.block_on(f(db.clone(), Policy::of(&config)));
    db.close();
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(1)
        }
    }
}

async fn token_command(db: &Db, action: TokenCommand) -> Result<ExitCode, String> {
    use crate::ops::tokens;
    match action {
        TokenCommand::Create { name, scope } => {
            let scope = crate::staff::Scope::from(scope);
            let token = tokens::create(db, &name, scope).await?;
            eprintln!(
                "created API token {name:?} (scope {}); it is shown only now, so store it safely:",
                scope.as_str()
            );
            println!("{token}");
        }
        TokenCommand::List => {
            let rows = tokens::list(db).await?;
            tokens::print_list(&rows, &mut std::io::stdout()).map_err(|e| e.to_string())?;
        }
        TokenCommand::Revoke { name } => {
            tokens::revoke(db, &name).await?;
            println!("revoked API token {name:?}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn print_import(file: &Path, s: &crate::ops::import::Summary) -> ExitCode {
    println!(
        "imported {}: {} rows: {} created, {} merged, {} unchanged, {} flagged as possible duplicates, {} rejected",
        file.display(),
        s.rows,
        s.created,
        s.merged,
        s.unchanged,
        s.flagged,
        s.rejected.len()
    );
    println!(
        "skipped {} rows of people erased since the file was written",
        s.skipped
    );
    for (line, reason) in &s.rejected {
        println!("line {line}: {reason}");
    }
    ExitCode::SUCCESS
}

fn load(path: &Path) -> Result<Config, ExitCode> {
    Config::load(path).map_err(|e| {
        eprintln!("error: {}: {e}", path.display());
        ExitCode::from(2)
    })
}

fn check_config(path: &Path) -> ExitCode {
    let config = match load(path) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let shipped = match config.check_shipped_secrets() {
        Ok(keys) => keys,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(1);
        }
    };
    println!("# {}: ok", path.display());
    for key in &shipped {
        println!(
            "# warning: {key} still has the value config.toml ships with: \
             change it before serving on any address but loopback"
        );
    }
    println!(
        "# Jivo webhook URL: {}/webhooks/jivo/[jivo.token]",
        config.server.public_url
    );
    let answered = answers(&config);
    match &answered {
        Ok(()) => println!("# store: {} (answers)", config.database.describe()),
        Err(e) => println!(
            "# store: {} (does NOT answer: {e})",
            config.database.describe()
        ),
    }
    print!("{}", config.redacted());
    if answered.is_err() {
        return ExitCode::from(1);
    }
    ExitCode::SUCCESS
}

/// Whether the configured store answers a query, changing nothing (no
/// file created, no migration). A SQLite file not created yet answers: the
/// service creates it.
fn answers(config: &Config) -> Result<(), String> {
    let location = Location::of(&config.database);
    if let Location::Sqlite { path, .. } = &location
        && !path.exists()
    {
        return Ok(());
    }
    let runtime = tokio::runtime::Runtime::new().map_err(|e| e.to_string())?;
    runtime.block_on(async move {
        tokio::task::spawn_blocking(move || Db::ping(&location))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())
    })
}

fn hash_password() -> ExitCode {
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        eprintln!("Password (input is shown; pipe it in to keep it off the screen):");
    }
    let mut line = String::new();
    if let Err(e) = stdin.lock().read_line(&mut line) {
        eprintln!("error: cannot read stdin: {e}");
        return ExitCode::from(2);
    }
    let password = line.trim_end_matches(['\n', '\r']);
    if password.is_empty() {
        eprintln!("error: empty password");
        return ExitCode::from(2);
    }
    match crate::http::auth::hash_password(password) {
        Ok(hash) => {
            println!("{hash}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(1)
        }
    }
}

fn serve(path: &Path) -> ExitCode {
    let config = match load(path) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    runtime.block_on(async {
        let app = match Application::build(config).await {
            Ok(app) => app,
            Err(e) => {
                tracing::error!(error = %e, "cannot start");
                eprintln!("error: {e}");
                return ExitCode::from(1);
            }
        };
        tracing::info!(addr = %app.addr(), "serving");
        tokio::spawn(reload_on_sighup(path.to_owned(), app.state()));
        match app.run_until(shutdown_signal()).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                tracing::error!(error = %e, "server failed");
                ExitCode::from(1)
            }
        }
    })
}

/// Completes on SIGINT or SIGTERM.
async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("cannot listen for SIGTERM");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received"),
        _ = term.recv() => tracing::info!("SIGTERM received"),
    }
}

/// Re-reads the config on every SIGHUP; a broken file changes nothing.
async fn reload_on_sighup(path: PathBuf, state: std::sync::Arc<crate::http::AppState>) {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut hup) = signal(SignalKind::hangup()) else {
        tracing::warn!("cannot listen for SIGHUP; live reload disabled");
        return;
    };
    while hup.recv().await.is_some() {
        match Config::load(&path) {
            Ok(new) => {
                if let Err(e) = crate::app::check_pipeline(&state.db, &new).await {
                    tracing::error!(error = %e, "reload refused; the previous settings stay");
                    continue;
                }
                let users: Vec<String> = new.sales.users.iter().map(|u| u.name.clone()).collect();
                let old = state.config();
                if new.server.listen != old.server.listen
                    || new.database.store() != old.database.store()
                {
                    tracing::warn!(
                        "server.listen and the database (path or url) take effect only after a restart"
                    );
                }
                state.set_config(new);
                // Retention runs again at once under the new limits.
                state.retention_wake.notify_one();
                // Requests check each session's user against the config
                // anyway; this clears what removed users leave behind.
                match state.db.end_sessions_except(users).await {
                    Ok(gone) if !gone.is_empty() => {
                        tracing::info!(users = ?gone, "sessions of removed users ended");
                    }
                    Ok(_) => {}
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot end the sessions of removed users")
                    }
                }
                tracing::info!(path = %path.display(), "configuration reloaded");
            }
            Err(e) => tracing::error!(error = %e, "reload refused; the previous settings stay"),
        }
    }
}
