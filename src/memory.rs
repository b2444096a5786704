//! How much memory the system can give: the budget that sizes read from files
//! and options (context, batch) are checked against before allocating.

/// Bytes the system says it can give without swapping: Linux's `MemAvailable`
/// from /proc/meminfo. `None` where that is not readable (other systems).
pub fn available_bytes() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    parse_mem_available(&info)
}

fn parse_mem_available(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find_map(|l| l.strip_prefix("MemAvailable:"))?;
    let kib: u64 = line.trim().strip_suffix("kB")?.trim().parse().ok()?;
    kib.checked_mul(1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_mem_available() {
        let info = "MemTotal:       16318412 kB\nMemFree:  1 kB\nMemAvailable:    9876543 kB\n";
        assert_eq!(parse_mem_available(info), Some(9_876_543 * 1024));
        assert_eq!(parse_mem_available("MemTotal: 5 kB\n"), None);
        #[cfg(target_os = "linux")]
        assert!(available_bytes().is_some_and(|b| b > 0));
    }
}
