//! Command line.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "podbridge",
    version,
    about = "Docker Engine API served from Kubernetes pods"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the Docker Engine API, running containers as pods in one namespace.
    Serve(ServeArgs),
}

#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// TCP address to listen on.
    #[arg(long, env = "PODBRIDGE_LISTEN", default_value = "127.0.0.1:2475")]
    pub listen: SocketAddr,
    /// Also listen on this unix socket.
    #[arg(long, env = "PODBRIDGE_SOCKET")]
    pub unix_socket: Option<PathBuf>,
    /// Namespace to run containers in (default: the kubeconfig context's namespace).
    #[arg(long, short = 'n', env = "PODBRIDGE_NAMESPACE")]
    pub namespace: Option<String>,
    /// Instance id labelled on every object; several podbridges may share a namespace.
    #[arg(long, env = "PODBRIDGE_INSTANCE", default_value = "default")]
    pub instance: String,
}
