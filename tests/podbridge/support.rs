//! Running the `podbridge` binary and other programs from tests.

use std::io::Write;
use std::process::{Command, Stdio};

/// What a finished program said: success, stdout, stderr.
pub struct Ran {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Ran {
    pub fn ok(&self) -> bool {
        self.code == 0
    }
}

/// Runs `program` in the crate root with `stdin` and extra environment.
pub fn run(program: &str, args: &[&str], stdin: Option<&str>, env: &[(&str, &str)]) -> Ran {
    let mut command = Command::new(program);
    command
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env_remove("PODBRIDGE_CONFIG")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (key, value) in env {
        command.env(key, value);
    }
    let mut child = command
        .spawn()
        .unwrap_or_else(|e| panic!("{program} runs: {e}"));
    if let Some(input) = stdin {
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
    }
    drop(child.stdin.take());
    let output = child.wait_with_output().unwrap();
    Ran {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

pub fn podbridge(args: &[&str], stdin: Option<&str>) -> Ran {
    run(env!("CARGO_BIN_EXE_podbridge"), args, stdin, &[])
}
