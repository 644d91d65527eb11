//! `/proc/PID/stat`, read the one safe way: its fields after the command name, which may itself
//! hold spaces and parentheses.

/// The fields of `/proc/PID/stat` from field 3 on: index 0 is the state (`R`, `S`, `Z`…),
/// 1 the parent pid, 19 the start time in clock ticks since boot. `None` once the process is gone.
pub fn stat_fields(pid: u32) -> Option<Vec<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    Some(stat.rsplit_once(')')?.1.split_whitespace().map(str::to_string).collect())
}

/// Whether a process exists and has not exited (a zombie, killed but not reaped, has).
pub fn running(pid: u32) -> bool {
    stat_fields(pid).is_some_and(|f| !matches!(f.first().map(String::as_str), Some("Z" | "X")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_is_running_with_its_parent() {
        let f = stat_fields(std::process::id()).unwrap();
        assert_eq!(f[1].parse::<u32>().unwrap(), std::os::unix::process::parent_id());
        assert!(running(std::process::id()));
    }
}
