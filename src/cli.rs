//! The command line: global flags become the top configuration layer; each subcommand is a thin
//! call into the library.

use std::collections::BTreeMap;
use std::io::Read as _;
use std::path::{Path, PathBuf};

use clap::{Args, Parser, Subcommand};
use serde::Serialize;

use crate::api::translate::{objects_yaml, CreateRequest, Translator};
use crate::config::Config;
use crate::model::{ContainerId, ImageConfig};
use crate::render::{Identity, RenderContext};
use crate::{policy_store, policy_test};

#[derive(Debug, Parser)]
#[command(
    name = "podbridge",
    version,
    about = "The Docker Engine API, served from Kubernetes pods shaped by policy files"
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalFlags,
    #[command(subcommand)]
    pub command: Command,
}

/// Flags shared by every subcommand. None has a clap default: an absent flag must not hide the
/// config file or the environment.
#[derive(Debug, Args)]
pub struct GlobalFlags {
    /// Configuration file (TOML or YAML).
    #[arg(long, global = true, env = "PODBRIDGE_CONFIG")]
    pub config: Option<PathBuf>,
    /// Kubernetes namespace for the containers.
    #[arg(long, short = 'n', global = true)]
    pub namespace: Option<String>,
    /// The CI project (for policy selectors and override bounds).
    #[arg(long, global = true)]
    pub project: Option<String>,
    /// This podbridge's instance ID.
    #[arg(long, global = true)]
    pub instance: Option<String>,
    /// Policy directory or file; repeat to overlay (later same-named files win).
    #[arg(long = "policies", global = true)]
    pub policies: Vec<PathBuf>,
    /// Directory of Rhai rule scripts.
    #[arg(long, global = true)]
    pub rules_dir: Option<PathBuf>,
    /// First part of pod names.
    #[arg(long, global = true)]
    pub name_prefix: Option<String>,
    /// Label added to every object (key=value); repeatable.
    #[arg(long = "label", global = true, value_parser = key_value)]
    pub labels: Vec<(String, String)>,
    /// Annotation added to every pod (key=value); repeatable.
    #[arg(long = "annotation", global = true, value_parser = key_value)]
    pub annotations: Vec<(String, String)>,
    /// Log filter (tracing syntax), e.g. `debug`.
    #[arg(long, global = true)]
    pub log: Option<String>,
}

fn key_value(text: &str) -> Result<(String, String), String> {
    text.split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .ok_or_else(|| format!("{text:?} is not key=value"))
}

/// The flags as a configuration layer: only what was given.
#[derive(Debug, Default, Serialize)]
pub struct FlagLayer {
    #[serde(skip_serializing_if = "Option::is_none")]
    namespace: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    project: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    instance: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    policies: Vec<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    rules_dir: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    name_prefix: Option<String>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    labels: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    annotations: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    log: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    dry_run: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    lock: Option<bool>,
}

impl GlobalFlags {
    pub fn layer(&self) -> FlagLayer {
        FlagLayer {
            namespace: self.namespace.clone(),
            project: self.project.clone(),
            instance: self.instance.clone(),
            policies: self.policies.clone(),
            rules_dir: self.rules_dir.clone(),
            name_prefix: self.name_prefix.clone(),
            labels: self.labels.iter().cloned().collect(),
            annotations: self.annotations.iter().cloned().collect(),
            log: self.log.clone(),
            ..FlagLayer::default()
        }
    }

    pub fn load_config(&self) -> Result<Config, crate::config::Error> {
        Config::load(self.config.as_deref(), &self.layer())
    }
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Translate a Docker ContainerCreate body into Kubernetes objects (no cluster needed).
    Translate(TranslateArgs),
    /// Check or test policies.
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// Print the effective configuration.
    Config,
    /// Print the Docker API compatibility table (Markdown, as embedded in README.md).
    Compat,
    /// Run the BridgeSession operator (one namespace per CI job).
    Operator(crate::operator::OperatorArgs),
    /// Serve only the readiness endpoints.
    Readiness(crate::readiness::ReadinessArgs),
    /// Serve the Docker Engine API, running containers as pods in the namespace.
    Serve(ServeArgs),
}

/// `podbridge serve` flags; like the global ones, they are a configuration layer.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Answer Docker clients without any cluster: translate, print what would be applied.
    #[arg(long)]
    pub dry_run: bool,
    /// Hold the namespace Lease `podbridge-lock` while serving; wait while another instance does.
    #[arg(long)]
    pub lock: bool,
}

#[derive(Debug, Args)]
pub struct TranslateArgs {
    /// ContainerCreate body (JSON); `-` or absent reads standard input.
    pub file: Option<PathBuf>,
    /// Docker container name (`docker run --name`).
    #[arg(long)]
    pub name: Option<String>,
    /// The image's Config as JSON (`docker image inspect --format '{{json .Config}}'`).
    #[arg(long)]
    pub image_config: Option<PathBuf>,
    /// Print, per rule, what it changed or why it refused.
    #[arg(long)]
    pub explain: bool,
}

#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Validate policy directories (default: the configured ones, or the built-in set).
    Check { paths: Vec<PathBuf> },
    /// Run policy test files (kind PolicyTest) found under a directory.
    Test {
        path: PathBuf,
        /// Rewrite expected object files from the actual output.
        #[arg(long)]
        update: bool,
    },
}

/// What a subcommand hands back to `main`: text to print and the exit code.
pub struct Outcome {
    pub stdout: String,
    pub stderr: String,
    pub code: i32,
}

/// Errors a subcommand reports; `main` prints them once.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Config(#[from] crate::config::Error),
    #[error(transparent)]
    Policies(Box<policy_store::Error>),
    #[error(transparent)]
    PolicyTest(Box<policy_test::Error>),
    #[error("reading {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: not a Docker image config: {message}")]
    ImageConfig { path: String, message: String },
    #[error(transparent)]
    Operator(#[from] crate::operator::Error),
    #[error(transparent)]
    Readiness(#[from] crate::readiness::Error),
    #[error("starting the async runtime: {0}")]
    Runtime(std::io::Error),
    #[error(transparent)]
    Serve(#[from] crate::api::server::ServeError),
    #[error(transparent)]
    Cluster(#[from] crate::cluster::ClusterError),
}

impl From<policy_store::Error> for Error {
    fn from(error: policy_store::Error) -> Self {
        Error::Policies(Box::new(error))
    }
}

impl From<policy_test::Error> for Error {
    fn from(error: policy_test::Error) -> Self {
        Error::PolicyTest(Box::new(error))
    }
}

fn read_input(file: Option<&Path>) -> Result<Vec<u8>, Error> {
    match file {
        None => read_stdin(),
        Some(path) if path == Path::new("-") => read_stdin(),
        Some(path) => std::fs::read(path).map_err(|source| Error::Read {
            path: path.display().to_string(),
            source,
        }),
    }
}

fn read_stdin() -> Result<Vec<u8>, Error> {
    let mut body = Vec::new();
    std::io::stdin()
        .read_to_end(&mut body)
        .map_err(|source| Error::Read {
            path: "standard input".into(),
            source,
        })?;
    Ok(body)
}

pub fn render_context(config: &Config) -> RenderContext {
    RenderContext {
        instance_id: config.instance_id(),
        namespace: config.namespace.clone().unwrap_or_else(|| "default".into()),
        project: config.project.clone(),
        name_prefix: config.name_prefix.clone(),
        init_image: config.init_image.clone(),
        labels: config.labels.clone(),
        annotations: config.annotations.clone(),
        docker_host_for_pods: config.docker_host_for_pods.clone(),
        volumes: crate::render::VolumeSettings {
            backing: config.named_volumes,
            size: config.volume_size.clone(),
            storage_class: config
                .volume_storage_class
                .clone()
                .filter(|class| !class.is_empty()),
            access_mode: config.volume_access_mode,
        },
        // `Config::load` validated the roots; an unvalidated config allows no binds.
        bind_roots: config.bind_roots().unwrap_or_default(),
    }
}

pub fn translate(global: &GlobalFlags, args: &TranslateArgs) -> Result<Outcome, Error> {
    let config = global.load_config()?;
    let set = policy_store::load(&config)?;
    let translator = Translator::new(policy_store::shared(set), render_context(&config));
    let body = read_input(args.file.as_deref())?;
    let image: Option<ImageConfig> = match &args.image_config {
        Some(path) => {
            let text = read_input(Some(path))?;
            Some(
                serde_json::from_slice(&text).map_err(|e| Error::ImageConfig {
                    path: path.display().to_string(),
                    message: e.to_string(),
                })?,
            )
        }
        None => None,
    };
    // The same request gives the same names, so repeated dry runs diff cleanly.
    let mut seed = body.clone();
    seed.extend_from_slice(args.name.as_deref().unwrap_or("").as_bytes());
    let request = CreateRequest {
        start: crate::render::StartInputs::default(),
        purpose: Default::default(),
        body: &body,
        name: args.name.as_deref(),
        image: image.as_ref(),
        identity: Identity {
            id: ContainerId::from_seed(&seed),
            created: jiff::Timestamp::now().to_string(),
        },
    };
    Ok(match translator.translate(&request) {
        Ok(translation) => {
            let mut stderr = String::new();
            for warning in &translation.warnings {
                stderr.push_str(&format!("warning: {warning}\n"));
            }
            if args.explain {
                stderr.push_str(&translation.explain());
            }
            Outcome {
                stdout: objects_yaml(&translation.objects),
                stderr,
                code: 0,
            }
        }
        Err(error) => {
            let mut stderr = String::new();
            if args.explain && !error.results().is_empty() {
                stderr.push_str(&crate::rules::report::explain(error.results()));
            }
            stderr.push_str(&format!("Error response ({}): {error}\n", error.status()));
            Outcome {
                stdout: String::new(),
                stderr,
                code: 1,
            }
        }
    })
}

pub fn policy(global: &GlobalFlags, command: &PolicyCommand) -> Result<Outcome, Error> {
    match command {
        PolicyCommand::Check { paths } => {
            let config = global.load_config()?;
            let paths = if paths.is_empty() {
                config.policies.clone()
            } else {
                paths.clone()
            };
            let set = policy_store::load_paths(
                &paths,
                config.rules_dir.as_deref(),
                config.script_limits(),
            )?;
            let mut stdout = String::new();
            for file in set.files() {
                stdout.push_str(&format!("ok  {file}\n"));
            }
            stdout.push_str(&format!(
                "{} files, {} rules, {} exceptions: valid\n",
                set.files().len(),
                set.rule_count(),
                set.exception_count()
            ));
            Ok(Outcome {
                stdout,
                stderr: String::new(),
                code: 0,
            })
        }
        PolicyCommand::Test { path, update } => {
            let (report, failed) = policy_test::run(path, *update)?;
            Ok(Outcome {
                stdout: report,
                stderr: String::new(),
                code: i32::from(failed > 0),
            })
        }
    }
}

/// `podbridge compat`: the route-by-route table README.md embeds between its markers.
pub fn compat() -> Outcome {
    Outcome {
        stdout: crate::api::server::compat::markdown(),
        stderr: String::new(),
        code: 0,
    }
}

pub fn show_config(global: &GlobalFlags) -> Result<Outcome, Error> {
    let config = global.load_config()?;
    Ok(Outcome {
        stdout: serde_yaml::to_string(&config).unwrap_or_default(),
        stderr: String::new(),
        code: 0,
    })
}

fn block_on<T>(future: impl std::future::Future<Output = Result<T, Error>>) -> Result<T, Error> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(Error::Runtime)?
        .block_on(future)
}

/// The one log subscriber of the long-running commands: the configured filter (an invalid one
/// falls back to `info`), stderr, text or JSON (`log_format`). A span's duration is logged when it
/// closes, so the phase spans (target [`crate::TIMING`], off unless the filter names them) time
/// each step of a request.
fn init_tracing(config: &Config) {
    use tracing_subscriber::fmt::format::FmtSpan;
    let filter = tracing_subscriber::EnvFilter::try_new(&config.log)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_span_events(FmtSpan::CLOSE);
    let _ = match config.log_format {
        crate::config::LogFormat::Text => builder.try_init(),
        crate::config::LogFormat::Json => builder.json().try_init(),
    };
}

pub fn operator(
    global: &GlobalFlags,
    args: &crate::operator::OperatorArgs,
) -> Result<Outcome, Error> {
    if args.print_crd {
        return Ok(Outcome {
            stdout: crate::operator::crd::crd_yaml(),
            stderr: String::new(),
            code: 0,
        });
    }
    let config = global.load_config()?;
    init_tracing(&config);
    block_on(async { Ok(crate::operator::run(args, &config).await?) })?;
    Ok(Outcome {
        stdout: String::new(),
        stderr: String::new(),
        code: 0,
    })
}

pub fn readiness(
    global: &GlobalFlags,
    args: &crate::readiness::ReadinessArgs,
) -> Result<Outcome, Error> {
    let config = global.load_config()?;
    init_tracing(&config);
    let docker = crate::readiness::PingProbe {
        address: args.docker.clone().unwrap_or_else(|| config.listen.clone()),
    };
    block_on(async {
        let state = crate::readiness::state(&config, std::sync::Arc::new(docker)).await;
        let shutdown = async {
            let _ = tokio::signal::ctrl_c().await;
        };
        // The flag, else the configuration's `readiness_listen` (file, environment), else the
        // default: this command exists to serve them.
        let listen = args
            .listen
            .clone()
            .or_else(|| config.readiness_listen.clone())
            .unwrap_or_else(|| crate::readiness::DEFAULT_LISTEN.to_string());
        Ok(crate::readiness::serve(&listen, state, shutdown).await?)
    })?;
    Ok(Outcome {
        stdout: String::new(),
        stderr: String::new(),
        code: 0,
    })
}

/// `podbridge serve`: load configuration and policies (failing before any port is bound), then
/// serve until SIGTERM / ctrl-c.
pub fn serve(global: &GlobalFlags, args: &ServeArgs) -> Result<Outcome, Error> {
    let mut layer = global.layer();
    layer.dry_run = args.dry_run.then_some(true);
    layer.lock = args.lock.then_some(true);
    let mut config = Config::load(global.config.as_deref(), &layer)?;
    init_tracing(&config);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(config.worker_threads.get())
        .enable_all()
        .build()
        .map_err(crate::api::server::ServeError::Io)?;
    if let (Some(url), false) = (config.session_broker.clone(), config.dry_run) {
        // Before the policies: the granted project selects them.
        let settings = crate::cluster::BrokerSettings {
            url,
            ca_file: config.session_broker_ca.clone(),
            token_file: config.session_token_file.clone(),
        };
        let grant = runtime.block_on(crate::cluster::obtain(&settings))?;
        crate::cluster::reconcile_with_config(
            &grant,
            &mut config.namespace,
            &mut config.project,
            &mut config.policy_profile,
        )?;
    }
    let set = policy_store::load(&config)?;
    let policies = policy_store::shared(set);
    runtime.block_on(async {
        let _watcher = policy_store::watch(config.clone(), policies.clone())?;
        if config.dry_run {
            // no cluster: no readiness endpoints, which would only report its absence
            let context = render_context(&config);
            crate::api::server::dry_run::run(&config, policies, context).await?;
            return Ok(());
        }
        if let Some(listen) = config.readiness_listen.clone() {
            // docker-ready pings this very server: `/_ping` answers 200 only once the cluster
            // is reachable and the watch caches are synced.
            let probe = crate::readiness::PingProbe {
                address: config.listen.clone(),
            };
            let state = crate::readiness::ReadinessState {
                metrics: Some(crate::metrics::render_serve),
                ..crate::readiness::state(&config, std::sync::Arc::new(probe)).await
            };
            tokio::spawn(async move {
                if let Err(error) =
                    crate::readiness::serve(&listen, state, std::future::pending()).await
                {
                    tracing::error!(%error, "Readiness endpoints not served");
                }
            });
        }
        crate::api::server::run(&config, policies, render_context(&config)).await?;
        Ok::<_, Error>(())
    })?;
    Ok(Outcome {
        stdout: String::new(),
        stderr: String::new(),
        code: 0,
    })
}
