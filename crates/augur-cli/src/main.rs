//! `augur`: the one binary. Subcommands run a coordinator, a worker or a whole
//! dev cluster, or talk to a cluster's API.

mod bench;
mod bench_placement;
mod bench_workflow;
mod client;
mod connection;
mod defaults;
mod demo;
mod dev;
mod etcd;
mod health;
mod limits;
mod logging;
mod placement;
#[cfg(test)]
mod reference;
#[cfg(test)]
mod reference_tests;
mod render;
mod schedule;
mod security;
mod serve;
mod token;
mod urls;
mod workflow;

use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

#[derive(Parser, Debug)]
#[command(
    name = "augur",
    version,
    about = "Augur: a distributed job scheduler that is observable first and places work adaptively"
)]
struct Cli {
    /// Coordinator API endpoint.
    #[arg(
        long,
        global = true,
        env = "AUGUR_ENDPOINT",
        default_value = "http://127.0.0.1:7070"
    )]
    endpoint: String,
    /// Output format of reading commands.
    #[arg(long, global = true, value_enum, default_value_t = Output::Table)]
    output: Output,
    /// Log format of long-running commands.
    #[arg(long, global = true, value_enum, env = "AUGUR_LOG_FORMAT", default_value_t = logging::LogFormat::Json)]
    log_format: logging::LogFormat,
    #[command(flatten)]
    connection: connection::ConnectionArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Table,
    Json,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run etcd, a coordinator and workers on this machine, for trying Augur out.
    Dev(dev::DevArgs),
    /// Run a coordinator.
    Coordinator(Box<serve::CoordinatorArgs>),
    /// Run a worker.
    Worker(serve::WorkerArgs),
    /// Submit a job; prints its id.
    Submit(client::SubmitArgs),
    /// Show one job.
    Get(client::GetArgs),
    /// List jobs.
    List(client::ListArgs),
    /// Cancel a job.
    Cancel(client::GetArgs),
    /// List workers.
    Workers,
    /// Periodic jobs: create, list, delete, pause, resume.
    #[command(subcommand)]
    Schedule(schedule::ScheduleCommand),
    /// Stop new placements on a worker (its running jobs finish); --cancel undoes it.
    Drain(client::DrainArgs),
    /// Show the leader, its epoch and the workers.
    Cluster,
    /// Exit 0 if the local coordinator (or, --role worker, worker) is healthy; for container health checks.
    Health(health::HealthArgs),
    /// Measure throughput and latency (or, --workflow fanout, a workflow run) on a cluster of its own.
    Bench(bench::BenchArgs),
    /// Recorded runs: `runs export` writes them as JSON lines.
    #[command(subcommand)]
    Runs(placement::RunsCommand),
    /// Replay recorded runs (or an SWF trace) under every policy and predictor; --apply stores the winner.
    Tune(placement::TuneArgs),
    /// Show the runtime model in use: version, training time, runs, metrics.
    Model(placement::ModelArgs),
    /// Show or change the placement configuration.
    #[command(subcommand)]
    Placement(placement::PlacementCommand),
    /// API tokens: create, list, revoke (admin role).
    #[command(subcommand)]
    Token(token::TokenCommand),
    /// Workflows (DAGs of jobs): validate, submit, get, list, cancel, retry.
    #[command(subcommand)]
    Workflow(workflow::WorkflowCommand),
}

/// Lets a client command end quietly when its reader goes away (`augur list |
/// head -1`), as `ls | head` does: the default SIGPIPE action ends the process
/// instead of `println!` panicking on EPIPE. Only for commands that do not
/// serve: sockets are written with MSG_NOSIGNAL by the standard library, so
/// only stdout and stderr can raise SIGPIPE, but the servers keep Rust's
/// default (ignored) all the same.
fn quiet_on_closed_pipe() {
    // SAFETY: setting a signal disposition to the default action, before any
    // thread of ours exists; no handler runs Rust code.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if !matches!(
        cli.command,
        Command::Dev(_) | Command::Coordinator(_) | Command::Worker(_) | Command::Bench(_)
    ) {
        quiet_on_closed_pipe();
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    connection::configure(cli.connection.clone());
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Dev(args) => {
                // The banner and the demo print to stdout; logs would drown
                // them, so only warnings by default (RUST_LOG=info for all).
                logging::init(cli.log_format, "warn");
                dev::run(args).await.map(|_| ExitCode::SUCCESS)
            }
            Command::Coordinator(args) => {
                logging::init(cli.log_format, "info");
                serve::coordinator(*args).await.map(|_| ExitCode::SUCCESS)
            }
            Command::Worker(args) => {
                logging::init(cli.log_format, "info");
                serve::worker(args).await.map(|_| ExitCode::SUCCESS)
            }
            Command::Bench(args) => {
                logging::init(cli.log_format, "warn");
                bench::run(args, cli.output)
                    .await
                    .map(|_| ExitCode::SUCCESS)
            }
            Command::Submit(args) => client::submit(&cli.endpoint, cli.output, args).await,
            Command::Get(args) => client::get(&cli.endpoint, cli.output, args).await,
            Command::List(args) => client::list(&cli.endpoint, cli.output, args).await,
            Command::Cancel(args) => client::cancel(&cli.endpoint, cli.output, args).await,
            Command::Workers => client::workers(&cli.endpoint, cli.output).await,
            Command::Drain(args) => client::drain(&cli.endpoint, cli.output, args).await,
            Command::Schedule(command) => schedule::run(&cli.endpoint, cli.output, command).await,
            Command::Cluster => client::cluster(&cli.endpoint, cli.output).await,
            Command::Health(args) => health::run(&cli.endpoint, args).await,
            Command::Runs(command) => placement::runs(&cli.endpoint, command).await,
            Command::Tune(args) => placement::tune_runs(&cli.endpoint, cli.output, args).await,
            Command::Model(args) => placement::model(&cli.endpoint, cli.output, args).await,
            Command::Token(command) => token::run(&cli.endpoint, cli.output, command).await,
            Command::Workflow(command) => workflow::run(&cli.endpoint, cli.output, command).await,
            Command::Placement(command) => {
                placement::placement(&cli.endpoint, cli.output, command).await
            }
        }
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {}", client::describe(&e));
            // Input refused before anything was sent exits as a bad flag does.
            if e.downcast_ref::<workflow::InvalidInput>().is_some() {
                ExitCode::from(workflow::INVALID_INPUT)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    #[test]
    fn the_command_line_definition_is_consistent() {
        super::Cli::command().debug_assert();
    }

    /// The command line with no flags beyond `args`, parsed.
    fn parse(args: &[&str]) -> super::Command {
        use clap::Parser;
        let mut full = vec!["augur"];
        full.extend_from_slice(args);
        super::Cli::try_parse_from(full).expect("parses").command
    }

    // Regression (issue 12): defaults were written twice, in the clap
    // attributes and in the libraries' `*Config::new`; the flags now take them
    // from the libraries, and must come out the same.
    #[test]
    fn coordinator_and_worker_flags_default_to_the_library_configs() {
        let super::Command::Coordinator(args) = parse(&["coordinator", "--insecure"]) else {
            panic!("not the coordinator command");
        };
        let flags = args.config().expect("a configuration");
        let library = augur_coordinator::CoordinatorConfig::new(
            &flags.node_id,
            flags.etcd_endpoints.clone(),
            flags.listen,
        );
        assert_eq!(
            (
                &flags.prefix,
                flags.etcd_timeout,
                (flags.lease_ttl, flags.worker_lease_ttl),
                flags.max_txn_ops,
                flags.max_output_tail,
                flags.retention_age,
                flags.retention_count,
            ),
            (
                &library.prefix,
                library.etcd_timeout,
                (library.lease_ttl, library.worker_lease_ttl),
                library.max_txn_ops,
                library.max_output_tail,
                library.retention_age,
                library.retention_count,
            )
        );
        assert_eq!(
            (
                flags.run_retention,
                flags.run_retention_count,
                flags.retrain_interval,
                flags.min_training_runs,
            ),
            (
                library.run_retention,
                library.run_retention_count,
                library.retrain_interval,
                library.min_training_runs,
            )
        );

        let super::Command::Worker(args) = parse(&["worker"]) else {
            panic!("not the worker command");
        };
        let flags = args.config().expect("a configuration");
        let library = augur_worker::WorkerConfig::new(
            &flags.node_id,
            flags.coordinators.clone(),
            flags.data_dir.clone(),
        );
        assert_eq!(
            (
                flags.slots,
                flags.drain_timeout,
                flags.output_retention,
                flags.heartbeat,
            ),
            (
                library.slots,
                library.drain_timeout,
                library.output_retention,
                library.heartbeat,
            )
        );
        assert_eq!(
            flags.executor,
            augur_worker::executor::Executor::Process(Default::default())
        );
    }
}
