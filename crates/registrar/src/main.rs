//! `registrar serve`, `registrar migrate` and `registrar healthcheck`: read the configuration,
//! set up telemetry, run.

use std::process::ExitCode;

use clap::Parser;
use registrar::{
    config::{Cli, Command},
    healthcheck,
    startup::{self, Application},
    telemetry,
};
use registrar_api::MetricsSource;
use registrar_application::{OsEntropy, ports::Entropy};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let log_format = cli.log.log_format;
    let command = cli.command();
    if let Command::Healthcheck(args) = command {
        // A probe: no runtime, no logger; one line on stderr says why it failed.
        return match healthcheck::check(args.listen) {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                #[allow(
                    clippy::print_stderr,
                    reason = "a probe's answer is its exit code and one line"
                )]
                {
                    eprintln!("registrar healthcheck: {error:#}");
                }
                ExitCode::FAILURE
            }
        };
    }
    // Before the runtime starts: the span exporter's blocking HTTP client must not be built
    // inside it.
    let telemetry = match telemetry::init(log_format) {
        Ok(telemetry) => telemetry,
        Err(error) => {
            // No logger yet: stderr is the only place left to say why we stop.
            #[allow(clippy::print_stderr, reason = "the logger could not be installed")]
            {
                eprintln!("registrar: {error:#}");
            }
            return ExitCode::FAILURE;
        }
    };
    let traces = telemetry.traces();
    let code = match actix_web::rt::System::new().block_on(run(command, traces)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!("{error:#}");
            ExitCode::FAILURE
        }
    };
    telemetry.shutdown();
    code
}

async fn run(command: Command, traces: telemetry::ProcessTraces) -> anyhow::Result<()> {
    match command {
        Command::Serve(args) => {
            let settings = args.settings(OsEntropy.secret())?;
            if settings.secret_is_ephemeral {
                tracing::warn!(
                    "no REGISTRAR_SECRET: codes are keyed with a random per-process secret; \
                     replicas need a shared one, and codes die on restart"
                );
            }
            let metrics = std::sync::Arc::new(telemetry::init_metrics()?);
            let upkeep = std::sync::Arc::clone(&metrics);
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(std::time::Duration::from_secs(5));
                loop {
                    tick.tick().await;
                    upkeep.run_upkeep();
                }
            });
            let metrics = MetricsSource::new(move || metrics.render());
            let app = Application::build(&settings, metrics, traces).await?;
            app.run_until_stopped().await
        }
        Command::Migrate(args) => {
            startup::connect(&args.database(), args.database_startup_timeout.into()).await?;
            Ok(())
        }
        // `main` answers it before any runtime or logger exists; the same check here keeps
        // the match whole without a panic.
        Command::Healthcheck(args) => healthcheck::check(args.listen),
    }
}
