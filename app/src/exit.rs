//! The command line's exit statuses, one per kind of outcome a script must tell apart.
//!
//! | status | meaning |
//! | --- | --- |
//! | 0 | success |
//! | 1 | error: the command could not do its work (bad file, runtime error, I/O, …) |
//! | 2 | usage: a flag or value is wrong (from the argument parser), or flags that cannot go together |
//! | 3 | verification failed: the written file does not reproduce the preview, or the export would not be valid ONNX (then nothing is written) |
//! | 4 | quality below the floor: the file is written and its report marked failed |
//! | 5 | does not fit: `fit --require-fit` found a device whose RAM, flash or latency verdict is red |
//! | 130 | cancelled (Ctrl-C) |

use std::process::ExitCode;

/// An outcome that is not an error of the program but has its own exit status.
#[derive(Debug)]
pub enum Failure {
    /// A combination of flags that cannot work (found after parsing): exit 2 like the parser's.
    Usage(String),
    Verification(String),
    Quality(String),
    DoesNotFit(String),
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Usage(m) => write!(f, "{m}"),
            Failure::Verification(m) => write!(f, "verification failed: {m}"),
            Failure::Quality(m) => write!(f, "quality below the floor: {m}"),
            Failure::DoesNotFit(m) => write!(f, "does not fit: {m}"),
        }
    }
}

impl std::error::Error for Failure {}

/// Success.
pub const SUCCESS: u8 = 0;
/// The command could not do its work.
pub const ERROR: u8 = 1;
/// A flag or value is wrong.
pub const USAGE: u8 = 2;
/// The written file failed verification (or would not have been valid).
pub const VERIFICATION: u8 = 3;
/// The compressed model's outputs are below the quality floor.
pub const QUALITY: u8 = 4;
/// Some device's verdict is red (`fit --require-fit`).
pub const DOES_NOT_FIT: u8 = 5;
/// The job was cancelled.
pub const CANCELLED: u8 = 130;

/// The exit status for `error`.
pub fn status_of(error: &anyhow::Error) -> ExitCode {
    for cause in error.chain() {
        if let Some(f) = cause.downcast_ref::<Failure>() {
            return ExitCode::from(match f {
                Failure::Usage(_) => USAGE,
                Failure::Verification(_) => VERIFICATION,
                Failure::Quality(_) => QUALITY,
                Failure::DoesNotFit(_) => DOES_NOT_FIT,
            });
        }
        if let Some(e) = cause.downcast_ref::<edgefit_engine::Error>() {
            match e {
                edgefit_engine::Error::InvalidExport { .. } => return ExitCode::from(VERIFICATION),
                edgefit_engine::Error::Cancelled => return ExitCode::from(CANCELLED),
                _ => {}
            }
        }
    }
    ExitCode::from(ERROR)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_outcome_has_its_status() {
        let status = |e: anyhow::Error| format!("{:?}", status_of(&e));
        assert_eq!(
            status(Failure::Verification("x".into()).into()),
            format!("{:?}", ExitCode::from(VERIFICATION))
        );
        assert_eq!(
            status(anyhow::Error::from(Failure::Quality("x".into())).context("while exporting")),
            format!("{:?}", ExitCode::from(QUALITY))
        );
        let invalid = edgefit_engine::Error::InvalidExport { reason: "x".into() };
        assert_eq!(
            status(invalid.into()),
            format!("{:?}", ExitCode::from(VERIFICATION))
        );
        assert_eq!(
            status(edgefit_engine::Error::Cancelled.into()),
            format!("{:?}", ExitCode::from(CANCELLED))
        );
        assert_eq!(
            status(anyhow::anyhow!("anything else")),
            format!("{:?}", ExitCode::from(ERROR))
        );
        assert_eq!((SUCCESS, USAGE), (0, 2));
    }
}
