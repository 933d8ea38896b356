//! The open-file limit. Every player holds a few descriptors (its voice WebSocket and UDP
//! socket; while playing, a download or a cached file), so the soft limit many systems start
//! with (1024) would stop a node at a few hundred players with `EMFILE` errors far from the
//! cause. At start the soft limit is raised to the hard one (to the kernel's cap when the
//! process may raise the hard limit too), and the log says how many players that leaves room
//! for.

/// Descriptors one playing player may hold: voice TCP and UDP, a source, a cache file.
const PER_PLAYER: u64 = 4;
/// Descriptors the server itself keeps (listeners, runtimes, plugins, logs).
const RESERVED: u64 = 256;

/// The most the kernel lets a process open, whatever its hard limit says.
fn system_cap() -> u64 {
    std::fs::read_to_string("/proc/sys/fs/nr_open").ok().and_then(|v| v.trim().parse().ok()).unwrap_or(1 << 20)
}

/// Raises the soft limit to the kernel's cap when the process may raise its hard limit too
/// (root, `CAP_SYS_RESOURCE`), else to the hard limit; returns the limit now in force.
pub fn raise() -> Option<u64> {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit and setrlimit only read and write the struct passed.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return None;
    }
    let cap = system_cap();
    let everything = libc::rlimit { rlim_cur: cap, rlim_max: limit.rlim_max.max(cap) };
    // SAFETY: as above.
    if limit.rlim_cur < cap && unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &everything) } == 0 {
        return Some(cap);
    }
    let target = limit.rlim_max.min(cap);
    if limit.rlim_cur < target {
        let raised = libc::rlimit { rlim_cur: target, rlim_max: limit.rlim_max };
        // SAFETY: as above.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            limit.rlim_cur = target;
        }
    }
    Some(limit.rlim_cur)
}

/// Raises the limit and says what it allows, warning when that is fewer players than
/// `MAX_PLAYERS` allows.
pub fn raise_and_report(max_players: usize) {
    let Some(files) = raise() else {
        tracing::warn!("cannot read the open-file limit");
        return;
    };
    let players = files.saturating_sub(RESERVED) / PER_PLAYER;
    if players < max_players as u64 {
        tracing::warn!(
            open_files = files,
            players,
            max_players,
            "the open-file limit leaves room for about {players} playing players, fewer than MAX_PLAYERS; raise it (ulimit -n, LimitNOFILE=, --ulimit nofile=)"
        );
    } else {
        tracing::info!(open_files = files, players, "open-file limit");
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_soft_limit_ends_at_the_hard_one_or_the_kernels_cap() {
        let now = super::raise().expect("the limit is readable");
        let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        // SAFETY: only writes the struct passed.
        assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) }, 0);
        assert_eq!(now, limit.rlim_cur, "what it reports is what is in force");
        // Whether or not the hard limit could be raised, nothing more can be opened.
        assert_eq!(now, limit.rlim_max.min(super::system_cap()));
    }
}
