//! The open-file limit. Every connection is a file descriptor, and a default soft limit of
//! 1 024 is reached by one client with a thousand idle sockets; the hard limit is usually far
//! higher, and raising the soft limit to it needs no privilege.

/// The soft and hard `RLIMIT_NOFILE` after raising the soft limit to the hard one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FdLimit {
    pub soft_before: u64,
    pub soft: u64,
    pub hard: u64,
}

/// Raises the soft open-file limit to the hard limit (capped where the kernel refuses more)
/// and returns both. `None` where the platform has no such limit.
#[cfg(unix)]
#[allow(clippy::unnecessary_cast)] // rlim_t is not u64 on every unix
pub fn raise_nofile_limit() -> Option<FdLimit> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit struct through a valid pointer.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return None;
    }
    let soft_before = lim.rlim_cur as u64;
    let hard = lim.rlim_max as u64;
    if lim.rlim_cur < lim.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: lim.rlim_max,
            rlim_max: lim.rlim_max,
        };
        // SAFETY: setrlimit reads one rlimit struct through a valid pointer.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            lim.rlim_cur = lim.rlim_max;
        }
    }
    Some(FdLimit {
        soft_before,
        soft: lim.rlim_cur as u64,
        hard,
    })
}

#[cfg(not(unix))]
pub fn raise_nofile_limit() -> Option<FdLimit> {
    None
}

/// File descriptors kept for everything that is not a client connection: model files, the
/// audit log, the listener, encoder workers, rejections in progress.
pub const RESERVED_FDS: u64 = 128;

/// The connection cap: what was asked for, lowered so connections can never take the
/// descriptors the rest of the process needs.
pub fn connection_cap(requested: usize, soft_limit: Option<u64>) -> usize {
    let Some(soft) = soft_limit else {
        return requested.max(1);
    };
    let room = soft.saturating_sub(RESERVED_FDS).max(16);
    requested
        .min(usize::try_from(room).unwrap_or(usize::MAX))
        .max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cap_leaves_room_for_other_descriptors() {
        assert_eq!(
            connection_cap(2048, Some(1024)),
            1024 - RESERVED_FDS as usize
        );
        assert_eq!(connection_cap(100, Some(1_048_576)), 100);
        assert_eq!(connection_cap(100, Some(50)), 16);
        assert_eq!(connection_cap(0, None), 1);
    }

    #[cfg(unix)]
    #[test]
    fn raising_never_lowers_the_limit() {
        let l = raise_nofile_limit().expect("unix has RLIMIT_NOFILE");
        assert!(l.soft >= l.soft_before);
        assert!(l.soft <= l.hard);
    }
}
