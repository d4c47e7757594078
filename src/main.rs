//! The `podbridge` binary: parse flags, run the subcommand, print once, exit with its code.

use clap::Parser;
use podbridge::cli::{self, Cli, Command};

/// jemalloc gives freed memory back (see Cargo.toml); glibc's allocator kept it.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn run(cli: &Cli) -> anyhow::Result<cli::Outcome> {
    Ok(match &cli.command {
        Command::Translate(args) => cli::translate(&cli.global, args)?,
        Command::Policy(command) => cli::policy(&cli.global, command)?,
        Command::Config => cli::show_config(&cli.global)?,
        Command::Compat => cli::compat(),
        Command::Operator(args) => cli::operator(&cli.global, args)?,
        Command::Readiness(args) => cli::readiness(&cli.global, args)?,
        Command::Serve(args) => cli::serve(&cli.global, args)?,
    })
}

fn main() {
    let cli = Cli::parse();
    match run(&cli) {
        Ok(outcome) => {
            print!("{}", outcome.stdout);
            eprint!("{}", outcome.stderr);
            std::process::exit(outcome.code);
        }
        Err(error) => {
            eprintln!("error: {error:#}");
            std::process::exit(2);
        }
    }
}
