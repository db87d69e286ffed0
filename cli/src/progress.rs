//! Progress of a long-running command, the one way every command shows it: a line on
//! standard error, redrawn in place, with bytes done, rate and time left. Nothing at all when
//! standard error is not a terminal, so scripts and logs see only the result.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use snapfs_control::units::{format_duration, format_size_rounded};

use crate::human;

pub struct Progress {
    shown: bool,
    /// When the first count was shown, and that count: the rate is measured from there, so a
    /// job that was half done when we started watching is not credited with that half.
    first: Option<(Instant, u64)>,
    drawn: bool,
}

impl Progress {
    /// Shown when standard error is a terminal.
    pub fn on_terminal() -> Progress {
        Progress {
            shown: std::io::stderr().is_terminal(),
            first: None,
            drawn: false,
        }
    }

    /// Whether anything is shown: a caller may skip the work of finding the counts if not.
    pub fn is_shown(&self) -> bool {
        self.shown
    }

    /// Redraws the line: `done` of `total` bytes (0: not known yet), then `what`.
    pub fn show(&mut self, done: u64, total: u64, what: &str) {
        if !self.shown {
            return;
        }
        let (since, base) = *self.first.get_or_insert((Instant::now(), done));
        let elapsed = since.elapsed();
        // Rates over less than a second swing too much to be worth showing.
        let rate = (elapsed >= Duration::from_secs(1) && done > base)
            .then(|| (done - base) as f64 / elapsed.as_secs_f64());
        eprint!("\r\x1b[2K{}", line(done, total, rate, what));
        self.drawn = true;
    }

    /// Takes the line away, before the result is printed.
    pub fn clear(&mut self) {
        if self.drawn {
            eprint!("\r\x1b[2K");
            self.drawn = false;
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.clear();
    }
}

/// `[#####.....]  52%  104.0 MiB / 200.0 MiB  10.4 MiB/s  9s left  WHAT`; the rate (bytes a
/// second) and the time left only when the rate is known.
pub fn line(done: u64, total: u64, rate: Option<f64>, what: &str) -> String {
    let mut s = format!(
        "{}  {} / {}",
        human::bar(human::percent_of(done, total)),
        format_size_rounded(done),
        format_size_rounded(total)
    );
    if let Some(rate) = rate.filter(|r| *r > 0.0) {
        s.push_str(&format!("  {}/s", format_size_rounded(rate as u64)));
        if total > done {
            let left = Duration::from_secs(((total - done) as f64 / rate).ceil() as u64);
            s.push_str(&format!("  {} left", format_duration(left)));
        }
    }
    s.push_str("  ");
    s.push_str(what);
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_and_time_left_once_known() {
        let mib = 1 << 20;
        assert_eq!(
            line(
                100 * mib,
                200 * mib,
                Some(10.0 * mib as f64),
                "cloud/local/db"
            ),
            "[#####.....]  50%  100.0 MiB / 200.0 MiB  10.0 MiB/s  10s left  cloud/local/db"
        );
        assert_eq!(
            line(0, 200 * mib, None, "x"),
            "[..........]   0%  0 B / 200.0 MiB  x"
        );
        assert_eq!(
            line(5, 5, Some(2.5), "x"),
            "[##########] 100%  5 B / 5 B  2 B/s  x"
        );
    }
}
