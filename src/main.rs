//! `palaver`: parse configuration, start the server, stop cleanly on Ctrl-C / SIGTERM.

use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")))
        .init();
    let config = match palaver::Config::load() {
        Ok(config) => config,
        Err(err) => {
            eprintln!("palaver: {err}");
            std::process::exit(2);
        }
    };
    let server = match palaver::serve(config).await {
        Ok(server) => server,
        Err(err) => {
            eprintln!("palaver: {err}");
            std::process::exit(1);
        }
    };
    println!("listening on http://{}", server.addr);
    shutdown_signal().await;
    tracing::info!("shutting down");
    server.shutdown().await;
}

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
