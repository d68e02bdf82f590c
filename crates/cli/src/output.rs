//! Where a command's report goes: the terminal, or a buffer that a mount's daemon sends back
//! to the `cowfs` command that asked for the work through a control ioctl.

use indicatif::{ProgressBar, ProgressStyle};
use std::fmt::{self, Write};

pub enum Output {
    Terminal,
    Buffer(String),
}

impl Output {
    pub fn line(&mut self, args: fmt::Arguments<'_>) {
        match self {
            Output::Terminal => println!("{args}"),
            Output::Buffer(text) => {
                let _ = writeln!(text, "{args}");
            }
        }
    }
}

/// `println!` to an [`Output`].
macro_rules! say {
    ($out:expr, $($arg:tt)*) => {
        $out.line(format_args!($($arg)*))
    };
}
pub(crate) use say;

/// A byte-count progress bar, drawn only on a terminal.
pub fn progress(len: u64, message: &str) -> ProgressBar {
    let bar = ProgressBar::new(len);
    bar.set_style(
        ProgressStyle::with_template("{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec}")
            .expect("a valid template")
            .progress_chars("=> "),
    );
    bar.set_message(message.to_string());
    bar
}

pub fn uuid_string(u: &[u8; 16]) -> String {
    let h: Vec<String> = u.iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        h[..4].concat(),
        h[4..6].concat(),
        h[6..8].concat(),
        h[8..10].concat(),
        h[10..].concat()
    )
}
