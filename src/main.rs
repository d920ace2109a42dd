//! `palaver`: parse configuration, start the server, drain and stop on Ctrl-C / SIGTERM.

use palaver::config::LogFormat;
use palaver::drain::SHUTDOWN_LIMIT;
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() {
    // Configuration first: the log format is part of it, and a bad value must stop the start
    // with one line saying why.
    let config = match palaver::Config::load() {
        Ok(config) => config,
        Err(err) => {
            eprintln!("palaver: {err}");
            std::process::exit(2);
        }
    };
    let format = config.log_format;
    init_logging(format);
    let server = match palaver::serve(config).await {
        Ok(server) => server,
        Err(err) => {
            eprintln!("palaver: {err}");
            std::process::exit(1);
        }
    };
    announce_listening(format, server.addr);
    shutdown_signal().await;
    tracing::info!("draining before shutdown");
    // Whatever the drain waits for (a database that stopped answering, a peer that stopped
    // reading), the process is gone within the limit; a second signal ends it at once.
    tokio::select! {
        _ = tokio::time::timeout(SHUTDOWN_LIMIT, server.shutdown()) => {}
        _ = shutdown_signal() => tracing::warn!("second signal: exiting without finishing the drain"),
    }
    tracing::info!("stopped");
    // Not a return from `main`: dropping the runtime would wait for blocking threads (a
    // database driver's, a password hash) without any limit.
    std::process::exit(0);
}

fn init_logging(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    match format {
        LogFormat::Text => builder.init(),
        // Fields at the top level of each object (`"route": …`, not `"fields": {"route": …}`),
        // no span lists: one flat object per line is what log shippers index best.
        LogFormat::Json => {
            builder.json().flatten_event(true).with_current_span(false).with_span_list(false).init()
        }
    }
}

/// The one line scripts and tests wait for: the bound address (useful with port 0). Printed
/// whatever `RUST_LOG` says; in the JSON format it is a JSON line like the others.
fn announce_listening(format: LogFormat, addr: std::net::SocketAddr) {
    let url = format!("http://{addr}");
    match format {
        LogFormat::Text => println!("listening on {url}"),
        LogFormat::Json => println!(
            "{}",
            serde_json::json!({
                "timestamp": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
                "level": "INFO",
                "message": "listening",
                "url": url,
                "target": "palaver",
            })
        ),
    }
}

#[allow(
    clippy::expect_used,
    reason = "without a SIGTERM handler the server could not drain: failing at start-up is right"
)]
async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("install SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
