//! podbridge entry point: parse the command line, start the server.

use anyhow::Context;
use clap::Parser;
use podbridge::api::server::{self, AppState, ServeConfig};
use podbridge::cli::{Cli, Command};
use podbridge::runtime::Runtime;
use podbridge::translate::Translator;
use std::sync::Arc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let Command::Serve(args) = Cli::parse().command;
    let config = kube::Config::infer().await.context("loading kubeconfig")?;
    let namespace = args
        .namespace
        .clone()
        .unwrap_or_else(|| config.default_namespace.clone());
    let client = kube::Client::try_from(config).context("building Kubernetes client")?;
    let runtime = Runtime::new(client, namespace.clone(), args.instance.clone());
    runtime.spawn_watchers();
    let translator = Arc::new(Translator {
        instance: args.instance.clone(),
        namespace,
    });
    let state = AppState {
        runtime,
        translator,
    };
    server::serve(
        state,
        ServeConfig {
            listen: Some(args.listen),
            unix_socket: args.unix_socket,
        },
    )
    .await?;
    Ok(())
}
