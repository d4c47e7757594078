//! A Docker exec as the client asked for it (`POST /containers/{id}/exec`, then
//! `POST /exec/{id}/start`), decoded once by the API layer; the runtime runs it without reading
//! Docker's JSON again.

/// `ExecConfig`: the command and how its streams are attached.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExecRequest {
    pub cmd: Vec<String>,
    /// `NAME=value` entries added to the container's environment.
    pub env: Vec<String>,
    /// Empty: the container's working directory.
    pub working_dir: String,
    /// Empty: the container's user.
    pub user: String,
    pub tty: bool,
    pub attach_stdin: bool,
    pub attach_stdout: bool,
    pub attach_stderr: bool,
    pub console_size: Option<ConsoleSize>,
}

/// `ExecStartConfig`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ExecStart {
    pub detach: bool,
    /// `Tty` given again at start; `None` keeps the create's.
    pub tty: Option<bool>,
    pub console_size: Option<ConsoleSize>,
}

/// A terminal size; both dimensions non-zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConsoleSize {
    pub width: u16,
    pub height: u16,
}
