//! The conntrack clock. The datapath stamps flows with `bpf_jiffies64()`, which the JIT
//! turns into a plain load (a ktime helper call cost about 20 ns a packet); user space
//! reads the same counter from /proc/timer_list and turns ticks into time with the
//! kernel's tick rate (CONFIG_HZ), measured once and kept in `NB_CONFIG`.

use std::{fs, time::Duration};

use crate::{Error, Result};

const TIMER_LIST: &str = "/proc/timer_list";

/// The tick rates Linux is built with.
const RATES: [u32; 4] = [100, 250, 300, 1000];

/// The kernel's jiffies now.
pub fn jiffies() -> Result<u64> {
    let text = fs::read_to_string(TIMER_LIST).map_err(|e| Error::io(TIMER_LIST, e))?;
    parse_jiffies(&text).ok_or_else(|| {
        Error::io(
            TIMER_LIST,
            std::io::Error::new(std::io::ErrorKind::InvalidData, "no `jiffies:` line"),
        )
    })
}

fn parse_jiffies(text: &str) -> Option<u64> {
    text.lines()
        .find_map(|line| line.strip_prefix("jiffies:"))
        .and_then(|n| n.trim().parse().ok())
}

/// Measures the tick rate: jiffies counted over 200 ms of the monotonic clock, rounded
/// to the nearest rate Linux is built with.
pub fn measure_hz() -> Result<u32> {
    let (j0, t0) = (jiffies()?, std::time::Instant::now());
    std::thread::sleep(Duration::from_millis(200));
    let (j1, t1) = (jiffies()?, std::time::Instant::now());
    Ok(nearest_rate(j1.saturating_sub(j0), t1 - t0))
}

fn nearest_rate(ticks: u64, over: Duration) -> u32 {
    let measured = ticks as f64 / over.as_secs_f64().max(1e-3);
    RATES
        .into_iter()
        .min_by(|a, b| {
            (f64::from(*a) - measured)
                .abs()
                .total_cmp(&(f64::from(*b) - measured).abs())
        })
        .unwrap_or(250)
}

/// "Now" for conntrack timestamps, and how to read them.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    now: u64,
    hz: u32,
}

impl Clock {
    /// The clock now, at the tick rate `hz` (`NB_CONFIG`'s; 0: not recorded, measured).
    pub fn now(hz: u32) -> Result<Clock> {
        let hz = if hz == 0 { measure_hz()? } else { hz };
        Ok(Clock {
            now: jiffies()?,
            hz,
        })
    }

    /// The kernel's tick rate.
    pub fn hz(&self) -> u32 {
        self.hz
    }

    /// How long ago a timestamp was.
    pub fn since(&self, stamp: u64) -> Duration {
        let ticks = self.now.saturating_sub(stamp);
        Duration::from_secs(ticks / u64::from(self.hz))
            + Duration::from_nanos(ticks % u64::from(self.hz) * 1_000_000_000 / u64::from(self.hz))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jiffies_line_is_found() {
        let text = "Timer List Version: v0.9\nHRTIMER_MAX_CLOCK_BASES: 8\nnow at 1 nsecs\n\njiffies: 4297085715\n  .idle_jiffies   : 4297085713\n";
        assert_eq!(parse_jiffies(text), Some(4_297_085_715));
        assert_eq!(parse_jiffies("nothing"), None);
    }

    #[test]
    fn rates_round_to_the_nearest_config_hz() {
        let over = Duration::from_millis(200);
        assert_eq!(nearest_rate(49, over), 250);
        assert_eq!(nearest_rate(61, over), 300);
        assert_eq!(nearest_rate(21, over), 100);
        assert_eq!(nearest_rate(199, over), 1000);
    }

    #[test]
    fn elapsed_time_follows_the_rate() {
        let clock = Clock {
            now: 1_000,
            hz: 250,
        };
        assert_eq!(clock.since(750), Duration::from_secs(1));
        assert_eq!(clock.since(990), Duration::from_millis(40));
        assert_eq!(clock.since(2_000), Duration::ZERO);
    }
}
