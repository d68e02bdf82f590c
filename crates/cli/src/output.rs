//! Where a command's report goes: the terminal, or a buffer that a mount's daemon sends back
//! to the `cowfs` command that asked for the work through a control ioctl.

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
