//! The `hoard` binary: parse flags and the config file, validate them, start logging and the
//! runtime, run the server until SIGINT/SIGTERM, and pick the exit code.

use std::process::ExitCode;

use hoard::config::{self, Action, LoadError};
use hoard::server::Server;

fn main() -> ExitCode {
    let (config, action) = match config::load(std::env::args_os()) {
        Ok(loaded) => loaded,
        // clap prints usage errors (exit 2) and --help/--version (exit 0) itself.
        Err(LoadError::Usage(e)) => e.exit(),
        Err(LoadError::Invalid(e)) => {
            eprintln!("hoard: {e}");
            return ExitCode::from(2);
        }
    };
    match action {
        Action::Serve => {}
        Action::CheckConfig => {
            println!(
                "hoard: configuration OK (listen {}, {})",
                config.listen,
                config.proxy.mode.as_str()
            );
            // The effective settings, as a config file that loads to the same.
            print!("{}", config.to_file_text());
            return ExitCode::SUCCESS;
        }
        Action::Ca(config::CaCommand::Init { dir }) => {
            return match hoard::tls::init_ca(&dir) {
                Ok(instructions) => {
                    print!("{instructions}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("hoard: {e}");
                    ExitCode::FAILURE
                }
            };
        }
        Action::Man => {
            return match clap_mangen::Man::new(config::cli()).render(&mut std::io::stdout()) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("hoard: {e}");
                    ExitCode::FAILURE
                }
            };
        }
        Action::Completions(shell) => {
            clap_complete::generate(shell, &mut config::cli(), "hoard", &mut std::io::stdout());
            return ExitCode::SUCCESS;
        }
        Action::Cache(command) => {
            // The cache logs what it repairs (a damaged index moved aside, orphaned bodies
            // removed); the tool would otherwise do it silently.
            hoard::logging::init(config.verbose);
            return match hoard::cache_tool::run(&config.cache, &command, &mut std::io::stdout()) {
                Ok(true) => ExitCode::SUCCESS,
                Ok(false) => ExitCode::FAILURE,
                Err(e) => {
                    eprintln!("hoard: {e}");
                    ExitCode::FAILURE
                }
            };
        }
    }
    hoard::logging::init(config.verbose);
    if let Some(warning) = config.exposure_warning() {
        tracing::warn!("{warning}");
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("hoard: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async {
        let server = match Server::bind(&config).await {
            Ok(server) => server.reload_on_sighup(std::env::args_os().collect()),
            Err(e) => {
                eprintln!("hoard: {e}");
                return ExitCode::FAILURE;
            }
        };
        // The main port's scheme, then a `--tls-port` beside it.
        let scheme = match config.tls.certs.is_empty() || config.tls.port.is_some() {
            true => "http",
            false => "https",
        };
        let tls_port = server
            .tls_addr()
            .map(|addr| format!(" and https://{addr}"))
            .unwrap_or_default();
        println!(
            "hoard listening on {scheme}://{}{tls_port} ({}), cache directory {}",
            server.local_addr(),
            config.proxy.mode.as_str(),
            config.cache.dir.display()
        );
        server
            .run(async {
                shutdown_signal().await;
                // A second signal while requests finish ends hoard at once. The index is
                // crash-safe: only fills still streaming are lost.
                tokio::spawn(async {
                    shutdown_signal().await;
                    eprintln!("hoard: second signal, exiting without waiting");
                    std::process::exit(130);
                });
            })
            .await;
        ExitCode::SUCCESS
    })
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(term) => term,
        Err(e) => {
            tracing::warn!(error = %e, "cannot watch SIGTERM");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
